"""``RedisConsumer``: a member of a consumer group of a stream.

- Joining creates the group if it is missing: at ``$`` (what is sent from now on), or at ``0``
  with ``start="earliest"`` (everything the stream still holds).
- Fetching: first this consumer's own pending entries (a restart under the same ``name``), then,
  every ``claim_interval``, entries idle longer than the visibility timeout (``CLAIM`` script:
  abandoned by a dead member, handed back, or nacked), then new entries with ``XREADGROUP >``
  on its own connection, blocking until the fetch's deadline or the next claim is due.
- ``attempt`` is the entry's delivery count in the group's pending entries list (PEL).
- ack is ``XACK``, coalesced by the core (``_ack_batch``): the acks of a burst go out in the next
  fetch's pipeline (``_take_acks``) or from the core's flusher, whichever comes first, never
  before the handler settled. reject is an ``XACK`` at once (there is no dead-letter stream).
- nack(delay) hands the entry to the ``polybus-parked`` consumer with an idle time of
  ``visibility_timeout - delay``: any member reclaims it once ``delay`` has passed. Longer delays
  also record a due time, and the claim parks the entry again until then.
- While alive, the consumer refreshes the idle time of what it holds (``held()``) every third of
  the visibility timeout; closing hands what it holds to ``polybus-parked`` (reclaimable at once).

Imports ``polybus``, ``polybus.adapter`` and this adapter's lower modules (not ``_broker``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from polybus import ConfigurationError, PolybusError
from polybus.adapter import Consumer, Delivery, Outage, Outcome, Start
from polybus_redis._connection import Command, Reply
from polybus_redis._errors import ConnectionLost
from polybus_redis._link import BlockingLink
from polybus_redis._scripts import CLAIM, HISTORY, LEAVE, MOVE
from polybus_redis._wire import PARKED, delivery_of, due_key

if TYPE_CHECKING:
    from polybus_redis._broker import RedisTopic

__all__ = ["RedisConsumer"]

log = logging.getLogger("polybus.redis")


def _default_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class RedisConsumer(Consumer):
    """A member of a consumer group; see the module docstring for how it maps onto Redis."""

    topic: RedisTopic
    ack_linger = 0.005
    """The acks of a burst wait this long for more (most ride along with the next fetch instead)."""

    def __init__(
        self,
        topic: RedisTopic,
        group: str,
        prefetch: int,
        start: Start = "latest",
        *,
        name: str | None = None,
    ) -> None:
        super().__init__(topic, group, prefetch)
        self.name = name or _default_name()
        if self.name == PARKED:
            raise ConfigurationError(f"consumer name {PARKED!r} is reserved")
        self._group_name = group
        self._start = "0" if start == "earliest" else "$"
        settings = topic.broker.settings
        self._vt_ms = int(settings.visibility_timeout * 1000)
        self._claim_interval = settings.claim_interval
        self._key = topic.key
        self._due = due_key(self._key)
        self._unsent: list[bytes] = []  # acks a failed fetch took: sent again (XACK is idempotent)
        self._kept: list[Delivery] = []  # read by a fetch that was cancelled after Redis answered
        self._answered = False
        self._refresher: asyncio.Task[None] | None = None
        self._link: BlockingLink | None = None
        self._outage = Outage(settings.reconnect, f"redis consumer of {topic.name!r}")
        self._history: bytes | None = b"0-0"
        self._next_claim = 0.0
        self._cursor: bytes = b"0-0"

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f" name={self.name!r}>"

    async def _open(self) -> None:
        broker = self.topic.broker
        await broker.execute(
            [["XGROUP", "CREATE", self._key, self._group_name, self._start, "MKSTREAM"]],
            what=f"join group {self._group_name!r}",
            ignore=("BUSYGROUP",),
        )
        self._link = BlockingLink(broker)
        self._refresher = asyncio.get_running_loop().create_task(self._refresh())

    # -- fetching ------------------------------------------------------------------------------

    async def _fetch(self, max_messages: int, timeout: float) -> list[Delivery]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self.closed:
            if not await self._outage.ready(time.monotonic() + deadline - loop.time()):
                return []
            try:
                out = await self._fetch_once(max_messages, deadline)
            except ConnectionLost as exc:
                self._outage.failed(exc)
                # Redis may have run a read whose reply the lost connection dropped: those entries
                # are this consumer's pending ones, re-read them rather than wait for the reclaim
                self._history = b"0-0"
                out = []
            else:
                self._outage.ended()
            if out or loop.time() >= deadline - 0.001:
                return out
        return []

    async def _fetch_once(self, n: int, deadline: float) -> list[Delivery]:
        if self._kept:  # read by a fetch that was cancelled after Redis answered it
            out, self._kept = self._kept[:n], self._kept[n:]
            return out
        loop = asyncio.get_running_loop()
        if self._history is not None:
            command = HISTORY.command([self._key], [self._group_name, self.name, n, self._history])
            return await self._call([command], "read own pending entries", self._parse_history)
        if loop.time() >= self._next_claim:
            self._next_claim = loop.time() + self._claim_interval
            command = CLAIM.command(
                [self._key, self._due], [self._group_name, self.name, PARKED, self._vt_ms, n, self._cursor]
            )
            out = await self._call([command], "reclaim entries", self._parse_claim)
            if len(out) >= n:  # maybe more to reclaim: claim again on the next fetch
                self._next_claim = loop.time()
            if out:
                return out
        read: list[Any] = ["XREADGROUP", "GROUP", self._group_name, self.name, "COUNT", n]
        block_ms = int((min(deadline, self._next_claim) - loop.time()) * 1000)
        if block_ms > 0:
            read += ["BLOCK", block_ms]
        read += ["STREAMS", self._key, ">"]
        acks, self._unsent = self._unsent, []
        taken = self._take_acks()
        if taken:
            acks += [d.native for d in taken]
        commands: list[Command] = [["XACK", self._key, self._group_name, *acks], read] if acks else [read]
        try:
            return await self._call(commands, f"read from {self.topic.name!r}", self._parse_read)
        except BaseException:
            if acks and not self._answered:
                self._unsent[:0] = acks
            raise

    async def _call(
        self, commands: list[Command], what: str, parse: Callable[[list[Reply]], list[Delivery]]
    ) -> list[Delivery]:
        """``commands`` on the blocking link, their replies parsed into deliveries.

        When the call is cancelled after Redis answered, the deliveries are kept for the next fetch.
        """
        assert self._link is not None
        self._answered = False
        try:
            replies = await self._link.call(commands, what=what)
        except asyncio.CancelledError:
            kept = self._link.take_kept()
            if kept is not None:
                self._answered = True
                self._kept += parse(kept)
            raise
        return parse(replies)

    def _parse_history(self, replies: list[Reply]) -> list[Delivery]:
        ((last, entries),) = replies
        self._history = last or None
        mine = {d.native for d in self.held()} | {d.native for d in self._kept} | set(self._unsent)
        return [self._delivery(e[0], e[1], e[2]) for e in entries if e[0] not in mine]

    def _parse_claim(self, replies: list[Reply]) -> list[Delivery]:
        ((cursor, entries),) = replies
        self._cursor = cursor
        return [self._delivery(e[0], e[1], e[2]) for e in entries]

    def _parse_read(self, replies: list[Reply]) -> list[Delivery]:
        reply = replies[-1]
        if not reply:
            return []
        return [self._delivery(entry_id, fields, 1) for entry_id, fields in reply[0][1]]

    def _delivery(self, entry_id: bytes, fields: list[bytes], attempt: int) -> Delivery:
        return delivery_of(self, entry_id, fields, attempt, entry_id)

    def _interrupt(self) -> None:
        if self._link is not None:
            self._link.interrupt()

    # -- settling ------------------------------------------------------------------------------

    async def _ack_batch(self, deliveries: list[Delivery]) -> None:
        ids = [d.native for d in deliveries]
        if self._unsent:
            ids, self._unsent = self._unsent + ids, []
        await self.topic.broker.execute([["XACK", self._key, self._group_name, *ids]], what="ack")

    async def _settle_native(self, delivery: Delivery, outcome: Outcome, delay: float | None) -> None:
        if outcome is Outcome.REJECT:  # no dead-letter stream: the entry is done with
            await self.topic.broker.execute(
                [["XACK", self._key, self._group_name, delivery.native]], what="reject"
            )
            return
        await self.topic.broker.execute([self._move_command([delivery.native], delay or 0.0)], what="nack")
        loop = asyncio.get_running_loop()
        self._next_claim = min(self._next_claim, loop.time() + (delay or 0.0))
        self._cursor = b"0-0"

    def _move_command(self, ids: list[bytes], delay: float) -> list[Any]:
        """MOVE ``ids`` to the parked consumer, reclaimable after ``delay`` seconds."""
        delay_ms = int(delay * 1000)
        idle = max(0, self._vt_ms - delay_ms)
        due = str(delay_ms) if delay_ms > self._vt_ms else ""
        return MOVE.command([self._key, self._due], [self._group_name, self.name, PARKED, idle, due, *ids])

    async def _refresh(self) -> None:
        """Keep what this consumer holds from being reclaimed while it is alive."""
        interval = self._vt_ms / 3000
        while True:
            await asyncio.sleep(interval)
            held = [d.native for d in self.held()] + [d.native for d in self._kept] + self._unsent
            if not held:
                continue
            command = MOVE.command(
                [self._key, self._due], [self._group_name, self.name, self.name, 0, "", *held]
            )
            try:
                await self.topic.broker.execute([command], what="refresh held entries")
            except PolybusError as exc:
                log.warning("could not refresh %d held entries of %r: %s", len(held), self.topic.name, exc)

    # -- closing -------------------------------------------------------------------------------

    async def _release(self, deliveries: list[Delivery]) -> None:
        try:
            if self._refresher is not None:
                self._refresher.cancel()
                await asyncio.wait({self._refresher})  # a cancellation of the caller still propagates
            await self._hand_back(deliveries)
        finally:
            if self._link is not None:
                await self._link.aclose()

    async def _hand_back(self, deliveries: list[Delivery]) -> None:
        """Send the acks still owed, park what this consumer holds (reclaimable at once), leave."""
        commands: list[Command] = []
        if self._unsent:
            commands.append(["XACK", self._key, self._group_name, *self._unsent])
            self._unsent = []
        ids = [d.native for d in deliveries] + [d.native for d in self._kept]
        self._kept = []
        if ids:
            commands.append(self._move_command(ids, 0.0))
        commands.append(LEAVE.command([self._key], [self._group_name, self.name]))
        try:
            await self.topic.broker.execute(commands, what="hand back held entries", ignore=("NOGROUP",))
        except PolybusError as exc:
            log.warning(
                "%r could not hand back %d entries (%s); they return after the visibility timeout",
                self,
                len(ids),
                exc,
            )
