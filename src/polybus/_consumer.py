"""``Consumer``: receives deliveries from a topic for a group, bounded by ``prefetch``.

The base class owns the buffering, the prefetch bound, the closed state and the bookkeeping of
unsettled deliveries; adapters implement four hooks (``_open``, ``_fetch``, ``_settle_native``,
``_release``). Closing a consumer hands every delivery it holds but did not settle back to the
group. Imports the core delivery, error and resource modules only.
"""

from __future__ import annotations

import asyncio
import collections
from typing import TYPE_CHECKING

from polybus._delivery import Delivery, Outcome
from polybus._errors import ClosedError
from polybus._resource import AsyncResource

if TYPE_CHECKING:
    from polybus._topic import Topic

__all__ = ["Consumer"]

POLL_INTERVAL = 1.0
"""Longest a single ``_fetch`` waits, so that closing and timeouts are noticed promptly."""


class Consumer(AsyncResource):
    """Receives from one topic as a member of ``group`` (or as a non-durable listener when ``None``).

    Use as ``async with topic.consumer("billing") as consumer`` and iterate, or call
    :meth:`receive`. Entering creates the group if it is missing; from then on the group receives
    every message sent to the topic. At most ``prefetch`` deliveries are held unsettled at once.
    """

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

    def __repr__(self) -> str:
        group = f" group={self.group!r}" if self.group else " (no group)"
        return f"<{type(self).__name__} topic={self.topic.name!r}{group}{' closed' if self._closed else ''}>"

    async def open(self) -> None:
        """Join the group (creating it if missing). Called by ``async with`` or on first receive."""
        if not self._opened:
            await self.topic.ensure()
        await super().open()
        self.topic.broker._track(self)

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
                try:
                    await asyncio.wait_for(self._room.wait(), wait)
                except TimeoutError:
                    pass
                continue
            if self._fetch_lock.locked():  # another task is fetching: wait for it, bounded
                try:
                    await asyncio.wait_for(self._fetch_lock.acquire(), wait)
                except TimeoutError:
                    continue
            else:
                await self._fetch_lock.acquire()  # free: no task (and no wait_for) needed
            try:
                if not self._buffer and not self._closed:
                    self._buffer.extend(await self._fetch(room, wait))
            finally:
                self._fetch_lock.release()

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
        async with self._fetch_lock:
            held = self.held()
            self._buffer.clear()
            self._unsettled.clear()
            await self._release(held)

    # -- adapter hooks -------------------------------------------------------------------------

    async def _fetch(self, max_messages: int, timeout: float) -> list[Delivery]:
        """Adapters: wait up to ``timeout`` s for up to ``max_messages`` deliveries (maybe none)."""
        raise NotImplementedError

    async def _settle_native(self, delivery: Delivery, outcome: Outcome, delay: float | None) -> None:
        """Adapters: ack, nack (after ``delay``) or reject ``delivery`` on the broker."""
        raise NotImplementedError

    _acks_in_memory = False
    """Adapters: set True where an ack is bookkeeping only (the broker work is done later, coalesced,
    by the adapter): ``ack()`` then calls :meth:`_ack_in_memory` instead of awaiting ``_settle_native``."""

    def _ack_in_memory(self, delivery: Delivery) -> None:
        """Adapters with ``_acks_in_memory``: record the ack of ``delivery``, without awaiting anything."""
        raise NotImplementedError

    def _interrupt(self) -> None:
        """Adapters: make a ``_fetch`` that is waiting return early (the consumer is closing)."""

    async def _release(self, deliveries: list[Delivery]) -> None:
        """Adapters: hand unsettled ``deliveries`` back to the group, then leave it."""
        raise NotImplementedError
