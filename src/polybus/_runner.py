"""Handlers, middleware and :func:`run_consumer`, which feeds a consumer's deliveries to a handler.

A handler is ``async (delivery) -> None``; raising means it failed. A middleware takes a handler
and returns a handler; :func:`compose` stacks them in one visible loop, first = outermost.
:func:`run_consumer` settles each delivery *after* the handler finished: ack on success,
``nack(retry_delay)`` on an exception, ``reject`` on a :class:`~polybus.DecodeError` (the payload
will never decode), unless the handler settled it itself. A request (a delivery with a reply
address) whose handler failed gets an error reply instead of a redelivery; one whose reply address
the broker refuses as none of its own (a forged ``polybus-reply-to``) is rejected, as it can never
be answered. A failing handler never stops the worker.

Two ways of running: ``concurrency`` workers that each receive and handle in turn (the lean
default), or, with ``ordered_by_key``, one receiving loop that hands each key's deliveries, one at a
time and in the order received, to a task per busy key (different keys in parallel, at most
``concurrency`` handlers at once). Either way the consumer's ``prefetch`` bounds what is held.
Imports core modules only.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from polybus._delivery import Delivery
from polybus._errors import ConfigurationError, DecodeError, PolybusError
from polybus._message import Message
from polybus._reply import CORRELATION_HEADER, ERROR_HEADER, ERROR_TYPE_HEADER, REPLY_TO_HEADER

if TYPE_CHECKING:
    from polybus._consumer import Consumer

__all__ = ["Handler", "Middleware", "compose", "error_reply", "run_consumer"]

log = logging.getLogger("polybus")

Handler = Callable[[Delivery], Awaitable[None]]
"""``async (delivery) -> None``; raising means the delivery failed."""
Middleware = Callable[[Handler], Handler]
"""Takes a handler, returns a handler that wraps it."""

ERROR_TEXT_LIMIT = 1000
"""Characters of an exception's message an error reply carries."""
RECEIVE_POLL = 0.25
"""Longest a runner waits in ``receive`` before it looks at ``stop`` again."""


def compose(handler: Handler, middlewares: Sequence[Middleware] = ()) -> Handler:
    """Wrap ``handler`` in ``middlewares``; the first one listed is the outermost."""
    for middleware in reversed(middlewares):
        handler = middleware(handler)
    return handler


def error_reply(delivery: Delivery, exc: BaseException) -> Message:
    """The reply that tells a requester its request failed: an empty body, the exception's qualified
    type name (``polybus.DecodeError`` for polybus's own errors) and its message (bounded), and the
    request's correlation id."""
    kind = type(exc)
    module = kind.__module__
    if module.startswith("polybus._"):  # polybus's own errors go by their public name
        module = "polybus"
    headers = {
        ERROR_TYPE_HEADER: f"{module}.{kind.__qualname__}",
        ERROR_HEADER: str(exc)[:ERROR_TEXT_LIMIT],
    }
    correlation = delivery.headers.get(CORRELATION_HEADER)
    if correlation is not None:
        headers[CORRELATION_HEADER] = correlation
    return Message(b"", headers, delivery.key)


async def _send_error_reply(delivery: Delivery, address: str, exc: BaseException) -> bool | None:
    """Send the error reply of a failed request: True if sent, False if the send failed (it may
    work later), ``None`` if the broker refused ``address`` as no reply address of its own (a forged
    or foreign ``polybus-reply-to``: no reply to it will ever go out)."""
    try:
        await delivery._consumer.topic.broker.reply(address, error_reply(delivery, exc))
    except ConfigurationError as refused:
        log.error("cannot answer request %r: %s", delivery, refused)
        return None
    except PolybusError as send_error:
        log.warning("could not send the error reply for %r: %s", delivery, send_error)
        return False
    return True


async def _failed(delivery: Delivery, exc: Exception, retry_delay: float | None) -> None:
    """Settle a delivery whose handler raised ``exc`` (unless the handler settled it)."""
    address = delivery.headers.get(REPLY_TO_HEADER)
    if isinstance(exc, DecodeError):
        log.error("rejecting %r: its payload cannot be decoded: %s", delivery, exc)
        if address is not None:
            await _send_error_reply(delivery, address, exc)
        if delivery.outcome is None:
            await delivery.reject()
    elif address is None:
        log.error("handler failed for %r; redelivering in %ss", delivery, retry_delay, exc_info=exc)
        if delivery.outcome is None:
            await delivery.nack(retry_delay)
    else:
        log.error("handler failed for request %r; sending an error reply", delivery, exc_info=exc)
        sent = await _send_error_reply(delivery, address, exc)
        if delivery.outcome is None:
            if sent is None:  # its reply address is none: retrying could never answer it
                log.error("rejecting request %r: its reply address %r is refused", delivery, address)
                await delivery.reject()
            else:
                await (delivery.ack() if sent else delivery.nack(retry_delay))


class _Run:
    """Whether a runner is being torn down: its task cancelled, or one of its tasks crashed (the task
    group then cancels the others). A cancel that arrives otherwise was aimed at one handler."""

    __slots__ = ("crashed", "task")

    def __init__(self) -> None:
        self.task = asyncio.current_task()
        self.crashed = False

    def ending(self) -> bool:
        return self.crashed or self.task is None or self.task.cancelling() > 0


async def _cancelled(delivery: Delivery, run: _Run | None, retry_delay: float | None) -> bool:
    """``CancelledError`` came out of a handler: False when it must propagate, else it was handled.

    When the runner is being torn down (cancelled, or a task of it crashed) the cancel propagates:
    what the handler held stays unsettled and goes back to the group when the consumer closes.
    Otherwise the cancel was aimed at this one handler: it counts as a failed handler (the cancel
    is absorbed with ``uncancel``, the delivery nacked, the worker goes on). Left unsettled, the
    delivery would stay held, its prefetch slot taken and its lease kept alive, until the consumer
    closed.
    """
    task = asyncio.current_task()
    if run is None or task is None or run.ending():
        return False
    task.uncancel()
    log.warning("the handler of %r was cancelled; redelivering in %ss", delivery, retry_delay)
    if delivery.outcome is None:
        # shielded: a second cancel ends the task, but never leaves the nack half sent
        await asyncio.shield(delivery.nack(retry_delay))
    return True


async def _handle(
    delivery: Delivery, handler: Handler, retry_delay: float | None, run: _Run | None = None
) -> None:
    """Run ``handler`` on ``delivery`` and settle it; a settlement that fails is logged (the broker
    redelivers what was not settled). The worker of :func:`run_consumer` inlines the same steps."""
    try:
        try:
            await handler(delivery)
        except Exception as exc:
            await _failed(delivery, exc, retry_delay)
            return
        except asyncio.CancelledError:
            if not await _cancelled(delivery, run, retry_delay):
                raise
            return
        if delivery.outcome is None:
            await delivery.ack()
    except PolybusError as exc:
        log.warning("could not settle %r: %s", delivery, exc)


async def run_consumer(
    consumer: Consumer,
    handler: Handler,
    *,
    concurrency: int = 1,
    retry_delay: float | None = 1.0,
    stop: asyncio.Event | None = None,
    ordered_by_key: bool = False,
) -> None:
    """Receive from ``consumer`` and run ``handler`` on each delivery until ``stop`` is set.

    ``concurrency`` handlers run at once. With ``ordered_by_key``, deliveries with the same key are
    handled one at a time in the order received (different keys in parallel, unkeyed ones freely).
    Returns when ``stop`` is set and the handlers under way finished, or when the consumer is closed;
    a delivery received as ``stop`` was set, or queued behind its key, is left unsettled (it goes
    back to the group when the consumer closes). Cancel it to stop at once: the deliveries of the
    handlers it cancels are left unsettled too, never acked; close the consumer to hand them back.
    A handler whose own task is cancelled (not ``run_consumer``'s) counts as failed: its delivery is
    nacked with ``retry_delay`` and the runner goes on.
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    stop = stop or asyncio.Event()
    if ordered_by_key:
        await _run_ordered(consumer, handler, concurrency, retry_delay, stop)
        return

    def running() -> bool:
        return not stop.is_set() and not consumer.closed

    stopped = stop.is_set
    run = _Run()

    async def worker() -> None:  # the hot path: no layer more than needed
        receive, buffered = consumer.receive, consumer._receive_buffered
        while not stopped() and not consumer._closed:
            delivery = buffered()
            if delivery is None:
                try:
                    delivery = await receive(RECEIVE_POLL)
                except PolybusError as exc:
                    if running():
                        log.warning("receive from %r failed: %s; retrying", consumer, exc)
                        await asyncio.sleep(0.5)
                    continue
            if delivery is None or stopped():
                continue  # received as the stop came: left unsettled, handed back on close
            try:  # _handle, inlined: one coroutine less per message
                try:
                    await handler(delivery)
                except Exception as exc:
                    await _failed(delivery, exc, retry_delay)
                    continue
                except asyncio.CancelledError:
                    if not await _cancelled(delivery, run, retry_delay):
                        raise
                    continue
                if delivery.outcome is None:
                    await delivery.ack()
            except PolybusError as exc:  # settling failed: the broker will redeliver it
                log.warning("could not settle %r: %s", delivery, exc)

    async def guarded() -> None:
        try:
            await worker()
        except Exception:
            run.crashed = True  # before the task group cancels the other workers
            raise

    async with asyncio.TaskGroup() as tasks:
        for _ in range(concurrency):
            tasks.create_task(guarded())


async def _receive(consumer: Consumer, running: Callable[[], bool]) -> Delivery | None:
    try:
        return await consumer.receive(timeout=RECEIVE_POLL)
    except PolybusError as exc:
        if running():
            log.warning("receive from %r failed: %s; retrying", consumer, exc)
            await asyncio.sleep(0.5)
        return None


async def _run_ordered(
    consumer: Consumer, handler: Handler, concurrency: int, retry_delay: float | None, stop: asyncio.Event
) -> None:
    run = _Run()
    slots = asyncio.Semaphore(concurrency)  # one per handler running (a busy key holds one)
    busy: dict[str, collections.deque[Delivery]] = {}  # key -> deliveries waiting behind the running one

    def running() -> bool:
        return not stop.is_set() and not consumer.closed

    async def run_key(key: str, delivery: Delivery) -> None:
        try:
            while True:
                await _handle(delivery, handler, retry_delay, run)
                waiting = busy[key]
                if not waiting or stop.is_set():
                    return  # anything still waiting stays unsettled: handed back on close
                delivery = waiting.popleft()
        except Exception:
            run.crashed = True
            raise
        finally:
            del busy[key]  # no await since the last check: nothing can have queued behind it meanwhile
            slots.release()

    async def run_one(delivery: Delivery) -> None:
        try:
            await _handle(delivery, handler, retry_delay, run)
        except Exception:
            run.crashed = True
            raise
        finally:
            slots.release()

    async with asyncio.TaskGroup() as tasks:
        try:
            while running():
                delivery = await _receive(consumer, running)
                if delivery is None or stop.is_set():
                    continue
                key = delivery.key
                if key is not None:
                    waiting = busy.get(key)
                    if waiting is not None:
                        waiting.append(delivery)  # bounded: it is held unsettled, within prefetch
                        continue
                await slots.acquire()
                if stop.is_set():
                    slots.release()
                    break
                if key is None:
                    tasks.create_task(run_one(delivery))
                else:
                    busy[key] = collections.deque()
                    tasks.create_task(run_key(key, delivery))
        except Exception:
            run.crashed = True  # before the task group cancels the running handlers
            raise
