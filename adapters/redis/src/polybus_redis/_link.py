"""What both kinds of redis consumer share: their own connection for blocking reads, and riding
out an outage within ``_fetch``'s timeout.

:class:`BlockingLink` holds one connection outside the pool, learns its ``CLIENT ID`` on every
(re)connect, and lets :meth:`~BlockingLink.interrupt` end a blocked ``XREAD[GROUP]`` at once with
``CLIENT UNBLOCK``. :class:`Outage` turns a lost connection during a fetch into backoff with
jitter, bounded by the fetch's deadline, and raises only once the reconnect policy gives up.
Imports polybus core modules and this adapter's broker module.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from redis.exceptions import ResponseError

from polybus_redis._connection import Command, Reply

if TYPE_CHECKING:
    from polybus_redis._broker import RedisBroker
    from polybus_redis._errors import ConnectionLost

__all__ = ["BlockingLink", "Outage"]

log = logging.getLogger("polybus.redis")


class BlockingLink:
    """A consumer's own connection, for reads that may block for up to a second.

    A call cancelled while its reply is awaited does not drop the connection: the link ends the
    blocking read (``CLIENT UNBLOCK``), reads the reply, and keeps it for :meth:`take_kept`, so
    that the entries Redis delivered meanwhile are not stranded in the consumer's pending list.
    """

    def __init__(self, broker: RedisBroker) -> None:
        self.broker = broker
        self._conn = broker.pool.make_connection()  # type: ignore[no-untyped-call]
        self._client_id: int | None = None
        self._busy = False
        self._kept: list[Reply] | None = None

    async def call(self, commands: Sequence[Command], *, what: str) -> list[Reply]:
        """Run ``commands`` pipelined on this connection; error replies raise (translated)."""
        if not self._conn.is_connected:
            self._client_id = None
            (client_id,) = await self.broker.run_on(self._conn, [["CLIENT", "ID"]], what=what)
            self._client_id = int(client_id)
        self._busy = True
        try:
            return await self.broker.run_on(self._conn, list(commands), what=what, finisher=self)
        finally:
            self._busy = False

    def take_kept(self) -> list[Reply] | None:
        """The replies of the last call, if it was cancelled after Redis answered it (else ``None``)."""
        kept, self._kept = self._kept, None
        if kept is None or any(isinstance(r, ResponseError) for r in kept):
            return None
        return kept

    async def unblock(self) -> None:
        """:class:`~polybus_redis._connection.Finisher`: end the blocked read of a cancelled call."""
        if self._client_id is not None:
            await self.broker.execute(
                [["CLIENT", "UNBLOCK", self._client_id]], what="unblock a cancelled read", retry=False
            )

    def keep(self, replies: list[Reply]) -> None:
        """:class:`~polybus_redis._connection.Finisher`: hold the replies of a cancelled call."""
        self._kept = replies

    def interrupt(self) -> None:
        """End a blocking read under way (it returns no entries)."""
        if self._busy and self._client_id is not None:
            self.broker.spawn([["CLIENT", "UNBLOCK", self._client_id]], "unblock a closing consumer")

    async def aclose(self) -> None:
        """Close the connection."""
        await self._conn.disconnect()


class Outage:
    """Backoff state of one consumer while its connection is down."""

    def __init__(self, broker: RedisBroker) -> None:
        self.broker = broker
        self._since: float | None = None
        self._next_try: float | None = None
        self._delays: Iterator[float] = iter(())

    def ended(self) -> None:
        """A fetch succeeded: the next failure starts a new outage."""
        self._since = self._next_try = None

    def failed(self, exc: ConnectionLost) -> None:
        """Schedule the next try after a backoff delay; re-raise ``exc`` when the policy gives up."""
        loop = asyncio.get_running_loop()
        policy = self.broker.settings.reconnect
        if self._since is None:
            self._since = loop.time()
            self._delays = policy.delays()
        delay = next(self._delays, None)
        if delay is None or (
            policy.give_up_after is not None and loop.time() - self._since + delay > policy.give_up_after
        ):
            self.ended()
            raise exc
        log.warning("redis consumer lost its connection (%s); retrying in %.2fs", exc, delay)
        self._next_try = loop.time() + delay

    async def ready(self, deadline: float) -> bool:
        """Wait for the next try; False (after sleeping until ``deadline``) if it comes later."""
        if self._next_try is None:
            return True
        loop = asyncio.get_running_loop()
        if self._next_try > deadline:
            await asyncio.sleep(max(0.0, deadline - loop.time()))
            return False
        await asyncio.sleep(max(0.0, self._next_try - loop.time()))
        return True
