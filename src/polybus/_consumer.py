"""``Consumer``: receives deliveries from a topic for a group, bounded by ``prefetch``.

The base class owns the buffering, the prefetch bound, the closed state, the bookkeeping of
unsettled deliveries and (for adapters that opt in with ``_ack_batch``) the coalescing of acks;
adapters implement four hooks (``_open``, ``_fetch``, ``_settle_native``, ``_release``). Closing a
consumer sends the acks it queued, then hands every delivery it holds but did not settle back to
the group. Imports the core delivery, error and resource modules only.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar

from polybus._capabilities import Support
from polybus._delivery import Delivery, Outcome
from polybus._errors import ClosedError, PolybusError
from polybus._message import GROUP_HEADER
from polybus._resource import AsyncResource

if TYPE_CHECKING:
    from polybus._topic import Topic

__all__ = ["Consumer"]

log = logging.getLogger("polybus")

POLL_INTERVAL = 1.0
"""Longest a single ``_fetch`` waits, so that closing and timeouts are noticed promptly."""


class Consumer(AsyncResource):
    """Receives from one topic as a member of ``group`` (or as a non-durable listener when ``None``).

    Use as ``async with topic.consumer("billing") as consumer`` and iterate, or call
    :meth:`receive`. Entering creates the group if it is missing; from then on the group receives
    every message sent to the topic. At most ``prefetch`` deliveries are held unsettled at once.
    """

    _coalesces_acks: ClassVar[bool] = False
    """True when the adapter implements :meth:`_ack_batch` (set by the class itself, not by hand)."""
    ack_linger: float = 0.0
    """Adapters with ``_ack_batch``: seconds a partial batch of acks waits for more (0: next loop turn)."""
    ack_batch_size: int = 1024
    """Adapters with ``_ack_batch``: queued acks that are sent at once, without lingering."""

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        cls._coalesces_acks = cls._ack_batch is not Consumer._ack_batch

    def __init__(self, topic: Topic, group: str | None, prefetch: int) -> None:
        if prefetch < 1:
            raise ValueError(f"prefetch must be >= 1, got {prefetch}")
        self.topic = topic
        self.group = group
        self.prefetch = prefetch
        self._buffer: collections.deque[Delivery] = collections.deque()
        self._unsettled: dict[Delivery, None] = {}  # insertion-ordered
        self._room = asyncio.Event()
        self._fetch_lock = asyncio.Lock()
        self._queued_acks: list[Delivery] = []
        self._ack_flusher_task: asyncio.Task[None] | None = None
        self._sorts_groups = True  # decided on open, from the broker's group_send capability
        self.skipped = 0
        """Deliveries sent to another group with ``Topic.send_to_group``, acked here unseen."""

    def __repr__(self) -> str:
        group = f" group={self.group!r}" if self.group else " (no group)"
        return f"<{type(self).__name__} topic={self.topic.name!r}{group}{' closed' if self._closed else ''}>"

    async def open(self) -> None:
        """Join the group (creating it if missing). Called by ``async with`` or on first receive."""
        if not self._opened:
            await self.topic.ensure()
        await super().open()
        broker = self.topic.broker
        broker._track(self)
        # with a native route to one group, no delivery carries the header: skip the scan
        self._sorts_groups = broker.capabilities.group_send is not Support.NATIVE

    @property
    def in_flight(self) -> int:
        """Deliveries held by this consumer and not yet settled (handed out or buffered)."""
        return len(self._unsettled) + len(self._buffer)

    def held(self) -> list[Delivery]:
        """Deliveries this consumer holds unsettled: handed out first, then buffered.

        Adapters use it to keep their leases alive (visibility timeouts, ack deadlines).
        """
        return [*self._unsettled, *self._buffer]

    def __aiter__(self) -> Consumer:
        return self

    async def __anext__(self) -> Delivery:
        while True:
            if self._closed:
                raise StopAsyncIteration
            try:
                delivery = await self.receive(timeout=None)
            except ClosedError:
                raise StopAsyncIteration from None
            if delivery is not None:
                return delivery

    async def receive(self, timeout: float | None = None) -> Delivery | None:
        """The next delivery, or ``None`` if none arrived within ``timeout`` seconds.

        ``timeout=None`` waits until a delivery arrives or the consumer is closed.
        """
        if self._closed:
            self._check_open()
        if not self._opened:
            await self.open()
        buffer = self._buffer
        if buffer:  # the hot path: hand out what the last fetch brought
            delivery = buffer.popleft()
            self._unsettled[delivery] = None
            return delivery
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        first = True
        while True:
            if self._buffer:
                return self._hand_out()
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0 and not first:
                return None
            first = False
            self._check_open()
            wait = POLL_INTERVAL if remaining is None else max(0.0, min(remaining, POLL_INTERVAL))
            room = self.prefetch - self.in_flight
            if room <= 0:
                self._room.clear()
                try:  # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel (gh-86296)
                    async with asyncio.timeout(wait):
                        await self._room.wait()
                except TimeoutError:
                    pass
                continue
            if self._fetch_lock.locked():  # another task is fetching: wait for it, bounded
                try:
                    async with asyncio.timeout(wait):
                        await self._fetch_lock.acquire()
                except TimeoutError:
                    continue
            else:
                await self._fetch_lock.acquire()  # free: no timeout needed
            try:
                if not self._buffer and not self._closed:
                    batch = await self._fetch(room, wait)
                    if self._sorts_groups:
                        for delivery in batch:  # one dict lookup per delivery; rarely more
                            if GROUP_HEADER in delivery.headers:
                                batch = await self._keep_own(batch)
                                break
                    self._buffer.extend(batch)
            finally:
                self._fetch_lock.release()

    async def _keep_own(self, batch: list[Delivery]) -> list[Delivery]:
        """The deliveries of ``batch`` for this group (the group header removed); ack the others unseen."""
        kept: list[Delivery] = []
        for delivery in batch:
            target = delivery.headers.get(GROUP_HEADER)
            if target is None:
                kept.append(delivery)
            elif target == self.group:
                del delivery.headers[GROUP_HEADER]
                kept.append(delivery)
            else:  # for another group (a listener takes none): settled here, never handed out
                self.skipped += 1
                try:
                    await delivery.ack()
                except PolybusError as exc:  # it comes back, and is skipped again
                    log.debug("could not ack %r, sent to group %r: %s", delivery, target, exc)
        return kept

    def _receive_buffered(self) -> Delivery | None:
        """The next delivery the last fetch brought, or ``None``: never waits, never fetches.

        The runner's hot path: a plain call where ``receive`` costs a coroutine.
        """
        if self._buffer and not self._closed:
            return self._hand_out()
        return None

    def _hand_out(self) -> Delivery:
        delivery = self._buffer.popleft()
        self._unsettled[delivery] = None
        return delivery

    def _mark_settled(self, delivery: Delivery, outcome: Outcome) -> None:
        """Record the settlement (before the broker work): refuses a closed consumer or a second one."""
        if self._closed:
            raise ClosedError(
                f"{self!r} is closed: delivery {delivery.id!r} was handed back to the group "
                "and will be redelivered"
            )
        if delivery.outcome is not None:
            delivery._settle(outcome)  # raises DeliveryStateError
        delivery.outcome = outcome
        self._unsettled.pop(delivery, None)
        self._room.set()

    async def _aclose(self) -> None:
        self.topic.broker._untrack(self)
        self._interrupt()
        # shielded: a cancel of the closing task must not cut short the acks and the hand-back
        await asyncio.shield(asyncio.ensure_future(self.__hand_back()))

    async def __hand_back(self) -> None:
        async with self._fetch_lock:
            await self._flush_acks()
            held = self.held()
            self._buffer.clear()
            self._unsettled.clear()
            await self._release(held)

    # -- ack coalescing (adapters that implement _ack_batch) ---------------------------------------

    def _queue_ack(self, delivery: Delivery) -> bool:
        """Queue an ack (the handler has finished): sent by the flusher task, never before this call.

        True when a whole batch is queued: the caller (``ack()``) then sends it at once.
        """
        queued = self._queued_acks
        queued.append(delivery)
        if self._ack_flusher_task is None:
            self._ack_flusher_task = asyncio.get_running_loop().create_task(self._run_ack_flusher())
        return len(queued) >= self.ack_batch_size

    async def _run_ack_flusher(self) -> None:
        try:
            while self._queued_acks:
                if len(self._queued_acks) < self.ack_batch_size:
                    await asyncio.sleep(self.ack_linger)  # let the acks of the same burst join
                await self._send_acks(self._take_acks())
        finally:
            self._ack_flusher_task = None

    async def _send_acks(self, batch: list[Delivery]) -> None:
        if not batch:  # a fetch took them into its own request meanwhile
            return
        try:
            await self._ack_batch(batch)
        except PolybusError as exc:  # unacked messages come back: at-least-once holds
            log.warning(
                "could not ack %d deliveries of %r (they will be redelivered): %s", len(batch), self, exc
            )

    def _take_acks(self) -> list[Delivery]:
        """Adapters: take the queued acks now, to send them in a request of their own (a fetch's pipeline).

        The adapter then owns them: it must send them, or leave them to be redelivered.
        """
        acks, self._queued_acks = self._queued_acks, []
        return acks

    async def _flush_acks(self) -> None:
        """Adapters (and closing): send every queued ack now, and wait until a flush under way is done."""
        flusher = self._ack_flusher_task
        if flusher is not None and flusher is not asyncio.current_task():
            await asyncio.shield(flusher)
        await self._send_acks(self._take_acks())

    def _drop_buffered(self, predicate: Callable[[Delivery], bool]) -> list[Delivery]:
        """Adapters: remove the fetched, not yet handed out deliveries for which ``predicate`` is true.

        For deliveries the adapter can no longer settle (a revoked partition); they are not released.
        """
        kept: list[Delivery] = []
        dropped: list[Delivery] = []
        for delivery in self._buffer:
            (dropped if predicate(delivery) else kept).append(delivery)
        if dropped:
            self._buffer.clear()
            self._buffer.extend(kept)
            self._room.set()
        return dropped

    # -- adapter hooks -------------------------------------------------------------------------

    async def _fetch(self, max_messages: int, timeout: float) -> list[Delivery]:
        """Adapters: wait up to ``timeout`` s for up to ``max_messages`` deliveries (maybe none)."""
        raise NotImplementedError

    async def _settle_native(self, delivery: Delivery, outcome: Outcome, delay: float | None) -> None:
        """Adapters: ack, nack (after ``delay``) or reject ``delivery`` on the broker.

        With ``_ack_batch`` implemented, it is called for nacks and rejects only.
        """
        raise NotImplementedError

    async def _ack_batch(self, deliveries: list[Delivery]) -> None:
        """Adapters, optional: ack ``deliveries`` (in ack order) on the broker in one go.

        Implementing it opts in to ack coalescing: ``ack()`` then queues the delivery without
        awaiting broker work, and the core calls this from one flusher task per burst of acks (after
        ``ack_linger``, at once at ``ack_batch_size``, and before ``_release`` on close). A
        :class:`~polybus.PolybusError` raised here is logged; those messages are redelivered.
        """
        raise NotImplementedError

    def _interrupt(self) -> None:
        """Adapters: make a ``_fetch`` that is waiting return early (the consumer is closing)."""

    async def _release(self, deliveries: list[Delivery]) -> None:
        """Adapters: hand unsettled ``deliveries`` back to the group, then leave it."""
        raise NotImplementedError
