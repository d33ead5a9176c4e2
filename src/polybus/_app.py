"""Handlers, middleware and the service runner.

A handler is ``async (delivery) -> None``; raising means it failed. A middleware takes a handler
and returns a handler; :func:`compose` stacks them in one visible loop, first = outermost.
:func:`run_consumer` feeds a consumer's deliveries to a handler and settles each one *after* the
handler finished: ack on success, ``nack(retry_delay)`` on an exception, ``reject`` on a
:class:`~polybus.DecodeError` (the payload will never decode), unless the handler settled it
itself. A failing handler never stops the worker. Imports core modules only.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from polybus._delivery import Delivery
from polybus._errors import DecodeError, PolybusError

if TYPE_CHECKING:
    from polybus._broker import Broker
    from polybus._consumer import Consumer

__all__ = ["App", "Handler", "Middleware", "compose", "run_consumer"]

log = logging.getLogger("polybus")

Handler = Callable[[Delivery], Awaitable[None]]
"""``async (delivery) -> None``; raising means the delivery failed."""
Middleware = Callable[[Handler], Handler]
"""Takes a handler, returns a handler that wraps it."""


def compose(handler: Handler, middlewares: Sequence[Middleware] = ()) -> Handler:
    """Wrap ``handler`` in ``middlewares``; the first one listed is the outermost."""
    for middleware in reversed(middlewares):
        handler = middleware(handler)
    return handler


async def _handle(delivery: Delivery, handler: Handler, retry_delay: float | None) -> None:
    try:
        await handler(delivery)
    except DecodeError as exc:
        log.error("rejecting %r: its payload cannot be decoded: %s", delivery, exc)
        if not delivery.settled:
            await delivery.reject()
        return
    except Exception:
        log.exception("handler failed for %r; redelivering in %ss", delivery, retry_delay)
        if not delivery.settled:
            await delivery.nack(retry_delay)
        return
    if not delivery.settled:
        await delivery.ack()


async def run_consumer(
    consumer: Consumer,
    handler: Handler,
    *,
    concurrency: int = 1,
    retry_delay: float | None = 1.0,
    stop: asyncio.Event | None = None,
) -> None:
    """Receive from ``consumer`` and run ``handler`` on each delivery until ``stop`` is set.

    ``concurrency`` handlers run at once. Returns when ``stop`` is set or the consumer is closed;
    cancel it to stop at once (unsettled deliveries go back to the group when the consumer closes).
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    stop = stop or asyncio.Event()

    def running() -> bool:
        return not stop.is_set() and not consumer.closed

    async def worker() -> None:
        while running():
            try:
                delivery = await consumer.receive(timeout=0.25)
            except PolybusError as exc:
                if not running():
                    return
                log.warning("receive from %r failed: %s; retrying", consumer, exc)
                await asyncio.sleep(0.5)
                continue
            if delivery is None:
                continue
            try:
                await _handle(delivery, handler, retry_delay)
            except PolybusError as exc:  # settling failed: the broker will redeliver it
                log.warning("could not settle %r: %s", delivery, exc)

    async with asyncio.TaskGroup() as tasks:
        for _ in range(concurrency):
            tasks.create_task(worker())


@dataclasses.dataclass
class _Subscription:
    topic: str
    group: str | None
    handler: Handler
    concurrency: int
    prefetch: int | None
    retry_delay: float | None


class App:
    """A service: subscriptions declared with :meth:`subscribe`, run together with :meth:`run`.

    app = polybus.App(middlewares=[...])

    @app.subscribe("orders", group="billing")
    async def bill(delivery): ...

    async with polybus.connect(url) as broker:
        await app.run(broker, stop=stop_event)
    """

    def __init__(self, *, middlewares: Sequence[Middleware] = ()) -> None:
        self.middlewares = list(middlewares)
        self.subscriptions: list[_Subscription] = []

    def subscribe(
        self,
        topic: str,
        group: str | None = None,
        *,
        concurrency: int = 1,
        prefetch: int | None = None,
        retry_delay: float | None = 1.0,
    ) -> Callable[[Handler], Handler]:
        """Decorator: run the handler on every message ``group`` receives from ``topic``."""

        def register(handler: Handler) -> Handler:
            self.subscriptions.append(
                _Subscription(topic, group, handler, concurrency, prefetch, retry_delay)
            )
            return handler

        return register

    async def start(self, broker: Broker) -> list[Consumer]:
        """Join every subscription's group (so none misses a message sent from now on)."""
        consumers = []
        for sub in self.subscriptions:
            consumer = broker.topic(sub.topic).consumer(sub.group, prefetch=sub.prefetch)
            await consumer.open()
            consumers.append(consumer)
        return consumers

    async def run(
        self, broker: Broker, *, stop: asyncio.Event | None = None, consumers: list[Consumer] | None = None
    ) -> None:
        """Run every subscription until ``stop`` is set (or the task is cancelled), then close them."""
        stop = stop or asyncio.Event()
        consumers = consumers if consumers is not None else await self.start(broker)
        try:
            async with asyncio.TaskGroup() as tasks:
                for sub, consumer in zip(self.subscriptions, consumers, strict=True):
                    handler = compose(sub.handler, self.middlewares)
                    tasks.create_task(
                        run_consumer(
                            consumer,
                            handler,
                            concurrency=sub.concurrency,
                            retry_delay=sub.retry_delay,
                            stop=stop,
                        )
                    )
        finally:
            for consumer in consumers:
                with contextlib.suppress(PolybusError):
                    await consumer.aclose()
