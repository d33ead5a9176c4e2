"""``RabbitConsumer``: basic.consume on its own channel, bounded by basic.qos = ``prefetch``.

Deliveries are pushed by RabbitMQ into a local deque (never more than ``prefetch`` unacked, so
memory stays bounded) and handed out in batches. Acks are coalesced by the core (``_ack_batch``):
``ack()`` queues the delivery, and the core hands the queued acks over on the next loop turn (the
adapter also takes them before a fetch waits, to free the broker's prefetch window). They go out as
one ``multiple`` ack for the settled prefix of delivery tags plus single acks for the rest, never
covering a delivery whose handler has not called ``ack()``. ``nack`` re-sends
a copy (see :mod:`polybus_rabbitmq._redeliver`) and acks the original; ``reject`` is basic.reject
without requeue. Closing the channel hands every unacked delivery back to the queue. A lost channel
is re-subscribed in the background with the reconnect policy; deliveries of the old channel are
redelivered by RabbitMQ, so settling them is a no-op.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from typing import TYPE_CHECKING, Any

import aio_pika.abc
import aiormq.abc

from polybus import BrokerConnectionError, NotFoundError, PolybusError
from polybus.adapter import Consumer, Delivery, Outcome
from polybus_rabbitmq._errors import CONNECTION_ERRORS, translating
from polybus_rabbitmq._wire import Incoming, resend_properties

if TYPE_CHECKING:
    from polybus_rabbitmq._topic import RabbitTopic

__all__ = ["RabbitConsumer"]

log = logging.getLogger("polybus.rabbitmq")

_UNSETTLED, _ACK_PENDING, _DONE = 0, 1, 2


class _Subscription:
    """One basic.consume on one channel: its incoming deque and the state of its delivery tags."""

    def __init__(
        self,
        channel: aio_pika.abc.AbstractChannel,
        underlay: aiormq.abc.AbstractChannel,
        queue: str,
        wake: asyncio.Event,
    ) -> None:
        self.channel = channel
        self.underlay = underlay
        self.queue = queue
        self.wake = wake
        self.ready: collections.deque[aiormq.abc.DeliveredMessage] = collections.deque()
        self.order: collections.deque[int] = collections.deque()  # handed-out tags, oldest first
        self.state: dict[int, int] = {}
        self.acks_pending = 0
        self.lock = asyncio.Lock()  # keeps ack / reject frames in the order their state changed
        self.released = False
        self.cancelled = False
        self.consumer_tag = ""

    @property
    def alive(self) -> bool:
        return not self.released and not self.channel.is_closed

    async def on_message(self, message: aiormq.abc.DeliveredMessage) -> None:
        self.ready.append(message)
        self.wake.set()

    def on_cancel(self, frame: Any) -> None:
        if getattr(frame, "consumer_tag", None) == self.consumer_tag:
            self.cancelled = True  # RabbitMQ cancelled us: the queue was deleted
            self.wake.set()


class _Native:
    __slots__ = ("message", "subscription", "tag")

    def __init__(self, subscription: _Subscription, message: aiormq.abc.DeliveredMessage) -> None:
        self.subscription = subscription
        self.message = message
        frame: Any = message.delivery
        self.tag: int = frame.delivery_tag


class RabbitConsumer(Consumer):
    """A member of a group (a durable queue), or a listener on an exclusive auto-delete queue."""

    topic: RabbitTopic

    def __init__(self, topic: RabbitTopic, group: str | None, prefetch: int) -> None:
        super().__init__(topic, group, prefetch)
        self._wake = asyncio.Event()
        self._subscription: _Subscription | None = None
        self._recovery: asyncio.Task[None] | None = None
        self._group_queue: str | None = None
        # Hand out at most a quarter of the window per fetch: the next fetch sends the acks queued
        # meanwhile, so RabbitMQ refills the window while the rest is handled (no stall per window).
        self._fetch_limit = max(1, prefetch // 4)

    # -- subscribing -----------------------------------------------------------------------------

    async def _open(self) -> None:
        if self.group is not None:
            self._group_queue = await self.topic.ensure_group(self.group)
        await self._subscribe()

    async def _subscribe(self) -> None:
        broker = self.topic.broker
        channel = await broker.channel()
        subscribed = False
        try:
            with translating(f"subscribing to topic {self.topic.name!r}", broker.display_url):
                await channel.set_qos(prefetch_count=self.prefetch)
                if self._group_queue is None:  # no group: a private queue that lives while we listen
                    declared = await channel.declare_queue(exclusive=True, auto_delete=True)
                    await declared.bind(self.topic.exchange, routing_key="")
                    queue = declared.name
                else:
                    queue = self._group_queue
                underlay = await channel.get_underlay_channel()
                subscription = _Subscription(channel, underlay, queue, self._wake)
                underlay.on_consumer_cancel_callbacks.add(subscription.on_cancel)
                ok = await underlay.basic_consume(queue, subscription.on_message, no_ack=False)
                subscription.consumer_tag = ok.consumer_tag or ""
            subscribed = True
        finally:
            if not subscribed:  # failed or cancelled half-way: do not leave the channel open
                await _close_channel(channel)
        channel.close_callbacks.add(self._on_channel_closed)
        self._subscription = subscription

    def _on_channel_closed(self, sender: Any, exc: BaseException | None = None) -> None:
        self._wake.set()

    async def _recover(self) -> None:
        old, self._subscription = self._subscription, None
        if old is not None:
            old.released = True  # its deliveries are back in the queue
        log.warning("%r lost its channel; subscribing again", self)
        await self.topic.broker.settings.reconnect.run(
            self._subscribe, retry_on=(BrokerConnectionError,), what=f"re-subscribing {self!r}"
        )

    # -- fetching --------------------------------------------------------------------------------

    def _interrupt(self) -> None:
        self._wake.set()

    async def _fetch(self, max_messages: int, timeout: float) -> list[Delivery]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            subscription = self._subscription
            if subscription is not None and subscription.alive:
                acks = self._take_acks()
                if acks:  # free the broker's prefetch window first
                    await self._ack_batch(acks)
                if subscription.ready:
                    return self._take(subscription, min(max_messages, self._fetch_limit))
                if subscription.cancelled:
                    raise NotFoundError(f"the queue of {self!r} was deleted")
            elif not self.closed:
                if not await self._await_recovery(deadline - loop.time()):
                    return []
                continue
            remaining = deadline - loop.time()
            if remaining <= 0 or self.closed:
                return []
            self._wake.clear()
            try:
                async with asyncio.timeout(remaining):  # cheaper than wait_for: no extra task
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def _await_recovery(self, remaining: float) -> bool:
        """Re-subscribe in the background; True once done, False if still going after ``remaining`` s."""
        if self._recovery is None:
            self._recovery = asyncio.ensure_future(self._recover())
        done, _ = await asyncio.wait({self._recovery}, timeout=max(0.0, remaining))
        if not done:
            return False
        task, self._recovery = self._recovery, None
        error = task.exception()
        if error is not None:
            raise error
        return True

    def _take(self, subscription: _Subscription, max_messages: int) -> list[Delivery]:
        ready = subscription.ready
        topic = self.topic.name
        out: list[Delivery] = []
        for _ in range(min(max_messages, len(ready))):
            message = ready.popleft()
            frame: Any = message.delivery
            properties = message.header.properties
            incoming = Incoming(
                properties, message.body, routing_key=frame.routing_key, redelivered=frame.redelivered
            )
            native = _Native(subscription, message)
            subscription.order.append(native.tag)
            subscription.state[native.tag] = _UNSETTLED
            out.append(
                Delivery(
                    self,
                    id=incoming.id,
                    topic=topic,
                    body=message.body,
                    headers=incoming.headers,
                    key=incoming.key,
                    timestamp=incoming.timestamp,
                    attempt=incoming.attempt,
                    native=native,
                )
            )
        return out

    # -- settling --------------------------------------------------------------------------------

    async def _ack_batch(self, deliveries: list[Delivery]) -> None:
        subscription = self._subscription
        acked = 0
        if subscription is not None and subscription.alive:
            state = subscription.state
            for delivery in deliveries:
                native: _Native = delivery.native
                if native.subscription is subscription:
                    state[native.tag] = _ACK_PENDING
                    acked += 1
            if acked:
                subscription.acks_pending += acked
                await self._flush(subscription)
        if acked < len(deliveries):
            late = len(deliveries) - acked
            log.info("%d acks of %r came after their channel was lost; RabbitMQ redelivers them", late, self)

    async def _settle_native(self, delivery: Delivery, outcome: Outcome, delay: float | None) -> None:
        native: _Native = delivery.native
        subscription = native.subscription
        if subscription is not self._subscription or not subscription.alive:
            log.info("%r was settled after its channel was lost; RabbitMQ redelivers it", delivery)
            return
        if outcome is Outcome.ACK:  # the core sends acks through _ack_batch; kept for completeness
            await self._ack_batch([delivery])
        elif outcome is Outcome.NACK:
            await self._nack(delivery, native, delay)
        else:
            await self._send(subscription, native.tag, requeue=False)

    async def _flush(self, subscription: _Subscription) -> None:
        """Send the recorded acks: one ``multiple`` ack for the settled prefix, single acks after it."""
        async with subscription.lock:
            if not subscription.acks_pending or not subscription.alive:
                return
            subscription.acks_pending = 0
            order, state = subscription.order, subscription.state
            highest = None
            while order and state[order[0]] != _UNSETTLED:
                tag = order.popleft()
                if state.pop(tag) == _ACK_PENDING:
                    highest = tag
            singles = [tag for tag, value in state.items() if value == _ACK_PENDING]
            for tag in singles:
                state[tag] = _DONE
            if len(order) > 4 * self.prefetch:  # drop settled tags stuck behind a slow one
                subscription.order = collections.deque(t for t in order if state[t] == _UNSETTLED)
                subscription.state = {t: _UNSETTLED for t in subscription.order}
            try:
                if highest is not None:
                    await subscription.underlay.basic_ack(highest, multiple=True, wait=False)
                for tag in singles:
                    await subscription.underlay.basic_ack(tag, wait=False)
            except CONNECTION_ERRORS as exc:
                log.info("acks of %r not sent (%s): RabbitMQ redelivers those messages", self, exc)

    async def _send(self, subscription: _Subscription, tag: int, *, requeue: bool) -> None:
        async with subscription.lock:
            if not subscription.alive:
                return
            subscription.state[tag] = _DONE
            try:
                await subscription.underlay.basic_reject(tag, requeue=requeue, wait=False)
            except CONNECTION_ERRORS as exc:
                log.info("reject of tag %d on %r not sent (%s): RabbitMQ redelivers it", tag, self, exc)

    async def _nack(self, delivery: Delivery, native: _Native, delay: float | None) -> None:
        subscription = native.subscription
        properties = resend_properties(
            native.message.header.properties, id=delivery.id, attempt=delivery.attempt + 1
        )
        try:
            await self.topic.broker.redeliverer.resend(subscription.queue, delivery.body, properties, delay)
        except (PolybusError, ValueError) as exc:
            # The copy may not exist: hand the original back instead (redelivered at once).
            log.warning("re-sending %r failed (%s); requeueing it", delivery, exc)
            await self._send(subscription, native.tag, requeue=True)
            return
        if subscription is self._subscription and subscription.alive:
            subscription.state[native.tag] = _ACK_PENDING  # the copy is confirmed: ack the original
            subscription.acks_pending += 1
            await self._flush(subscription)

    # -- closing ---------------------------------------------------------------------------------

    async def _aclose(self) -> None:
        # The core's close (queued acks, then _release) runs to its end even if the closing task is
        # cancelled: an open channel would keep the unacked deliveries from the group until the
        # connection closes. The cancel itself propagates to the caller.
        closing = asyncio.ensure_future(super()._aclose())
        _CLOSING.add(closing)
        closing.add_done_callback(_CLOSING.discard)
        await asyncio.shield(closing)

    async def _release(self, deliveries: list[Delivery]) -> None:
        recovery, self._recovery = self._recovery, None
        if recovery is not None:
            recovery.cancel()
            await asyncio.wait({recovery})  # raises CancelledError only if *we* are cancelled
            if not recovery.cancelled() and recovery.exception() is not None:
                log.info("%r closed while re-subscribing: %s", self, recovery.exception())
        subscription, self._subscription = self._subscription, None
        if subscription is None:
            return
        if subscription.alive:
            await self._flush(subscription)  # what was handled stays handled
        subscription.released = True
        subscription.channel.close_callbacks.discard(self._on_channel_closed)
        # closing the channel requeues every unacked delivery (and drops a private queue)
        await _close_channel(subscription.channel)


_CLOSING: set[asyncio.Future[None]] = set()
"""Closes that outlived a cancelled ``aclose()`` (asyncio keeps only weak references to tasks)."""


async def _close_channel(channel: aio_pika.abc.AbstractChannel) -> None:
    if not channel.is_closed:
        with contextlib.suppress(*CONNECTION_ERRORS):
            await channel.close()
