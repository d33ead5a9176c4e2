"""``App``: a service's subscriptions, declared once with :meth:`App.subscribe`, run together.

``subscribe`` works out each handler's shape once (see ``polybus._handler``); ``start`` declares
the whole topology on a broker (every group joined, every ``publish_to`` topic ensured, logical topic
names mapped to physical ones, per-subscription overrides applied) before anything is published;
``run`` feeds each subscription's consumer to its handler (``polybus._runner``) until asked to
stop, then gives the handlers under way a grace period. Imports core modules only.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from polybus._errors import ConfigurationError, PolybusError
from polybus._handler import HandlerShape, Returns, inspect_handler, typed_handler
from polybus._runner import Handler, Middleware, compose, run_consumer

if TYPE_CHECKING:
    from polybus._broker import Broker
    from polybus._consumer import Consumer
    from polybus._producer import Producer

__all__ = ["App", "Handler", "Middleware", "compose", "run_consumer"]

log = logging.getLogger("polybus")

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])

OVERRIDABLE = ("concurrency", "prefetch")
"""What ``overrides`` may set per subscription."""


@dataclasses.dataclass(frozen=True)
class Subscription:
    """One ``@app.subscribe(...)``: the handler and its settings as declared in code."""

    name: str
    topic: str
    group: str | None
    handler: Callable[..., Awaitable[Any]]
    shape: HandlerShape
    concurrency: int
    prefetch: int | None
    retry_delay: float | None
    publish_to: str | None
    ordered_by_key: bool


@dataclasses.dataclass
class _Plan:
    """One start of the App on a broker: the names and settings resolved, what was opened for it."""

    broker: Broker
    topics: dict[str, str]
    overrides: dict[str, dict[str, int]]
    consumers: list[Consumer]
    producers: dict[str, Producer]
    handlers: list[Handler]
    concurrency: list[int]


def _check_count(value: Any, what: str) -> int:
    if value.__class__ is not int or value < 1:
        raise ConfigurationError(f"{what} must be a whole number >= 1, got {value!r}")
    return int(value)


class App:
    """A service: subscriptions declared with :meth:`subscribe`, run together with :meth:`run`.

    app = polybus.App(middlewares=[...])

    @app.subscribe("orders", group="billing", concurrency=8, publish_to="invoices")
    async def bill(order: Order) -> Invoice: ...

    async with polybus.connect(url) as broker:
        await app.run(broker, stop=stop_event)
    """

    def __init__(self, *, middlewares: Sequence[Middleware] = ()) -> None:
        self.middlewares = list(middlewares)
        self.subscriptions: list[Subscription] = []
        self._plans: dict[tuple[int, ...], _Plan] = {}

    def subscribe(
        self,
        topic: str,
        group: str | None = None,
        *,
        concurrency: int = 1,
        prefetch: int | None = None,
        retry_delay: float | None = 1.0,
        publish_to: str | None = None,
        ordered_by_key: bool = False,
        name: str | None = None,
    ) -> Callable[[F], F]:
        """Decorator: run the handler on every message ``group`` receives from ``topic``.

        The handler's first parameter's annotation says how the body is decoded
        (``polybus.Delivery``: not at all; ``bytes``, ``str``, ``dict``, a pydantic model or any type
        pydantic validates); a parameter annotated ``polybus.Delivery`` receives the delivery. What it
        returns, if not ``None``, is the reply to a request, else is published to ``publish_to``.
        ``concurrency`` handlers run at once; with ``ordered_by_key`` one key's messages run one at a
        time, in order. ``name`` (default: the function's name) is how config refers to it.
        Raises :class:`~polybus.ConfigurationError` for a handler that cannot be called this way.
        """
        _check_count(concurrency, "concurrency")
        if prefetch is not None:
            _check_count(prefetch, "prefetch")
        if retry_delay is not None and retry_delay < 0:
            raise ConfigurationError(f"retry_delay must be >= 0 seconds or None, got {retry_delay!r}")

        def register(handler: F) -> F:
            sub_name = name if name is not None else getattr(handler, "__name__", type(handler).__name__)
            if not isinstance(sub_name, str) or not sub_name:
                raise ConfigurationError(
                    f"give the subscription of {handler!r} a name: subscribe(..., name=)"
                )
            if any(s.name == sub_name for s in self.subscriptions):
                raise ConfigurationError(
                    f"two subscriptions are named {sub_name!r}: "
                    "give one another name with subscribe(..., name=)"
                )
            shape = inspect_handler(handler, sub_name)
            if publish_to is not None and shape.returns_none:
                raise ConfigurationError(
                    f"subscription {sub_name!r} has publish_to={publish_to!r} but its handler is annotated "
                    "to return None: nothing would ever be published"
                )
            self.subscriptions.append(
                Subscription(
                    sub_name,
                    topic,
                    group,
                    handler,
                    shape,
                    concurrency,
                    prefetch,
                    retry_delay,
                    publish_to,
                    ordered_by_key,
                )
            )
            return handler

        return register

    def _resolve(
        self, topics: Mapping[str, str] | None, overrides: Mapping[str, Mapping[str, int]] | None
    ) -> tuple[dict[str, str], dict[str, dict[str, int]]]:
        names = {s.name for s in self.subscriptions}
        checked: dict[str, dict[str, int]] = {}
        for sub_name, values in (overrides or {}).items():
            if sub_name not in names:
                known = ", ".join(sorted(names)) or "none"
                raise ConfigurationError(
                    f"overrides name subscription {sub_name!r}, "
                    f"which this App does not have (it has: {known})"
                )
            for key in values:
                if key not in OVERRIDABLE:
                    raise ConfigurationError(
                        f"override {key!r} of subscription {sub_name!r} is unknown: "
                        f"use {', '.join(OVERRIDABLE)}"
                    )
            checked[sub_name] = {  # None: not overridden (what a settings model with optional fields gives)
                k: _check_count(v, f"{sub_name}.{k}") for k, v in values.items() if v is not None
            }
        return dict(topics or {}), checked

    async def start(
        self,
        broker: Broker,
        *,
        topics: Mapping[str, str] | None = None,
        overrides: Mapping[str, Mapping[str, int]] | None = None,
    ) -> list[Consumer]:
        """Declare the whole topology: join every subscription's group and ensure every ``publish_to``
        topic, so that nothing sent from now on is missed. Returns the consumers, for :meth:`run`.

        ``topics`` maps the topic names used in code to the broker's (``{"orders": "prod-orders-v2"}``);
        ``overrides`` sets a subscription's ``concurrency`` or ``prefetch`` by its name. An unknown
        subscription name raises :class:`~polybus.ConfigurationError` before anything is opened.
        """
        topic_map, checked = self._resolve(topics, overrides)
        for sub in self.subscriptions:
            if sub.ordered_by_key:
                broker.capabilities.require(
                    "ordering_per_key",
                    broker=f"{broker.scheme}://",
                    need=f"subscription {sub.name!r} (ordered_by_key)",
                )
        plan = _Plan(broker, topic_map, checked, [], {}, [], [])
        try:
            for sub in self.subscriptions:
                prefetch = checked.get(sub.name, {}).get("prefetch", sub.prefetch)
                plan.consumers.append(
                    broker.topic(topic_map.get(sub.topic, sub.topic)).consumer(sub.group, prefetch=prefetch)
                )
            # joined together: a group join can take seconds (a Kafka rebalance), once for all of them
            opened = await asyncio.gather(*(c.open() for c in plan.consumers), return_exceptions=True)
            for outcome in opened:
                if isinstance(outcome, BaseException):
                    raise outcome
            await self._bind(plan)
        except BaseException:
            await _close(plan.consumers, plan.producers)
            raise
        self._plans[tuple(map(id, plan.consumers))] = plan
        return plan.consumers

    async def _bind(self, plan: _Plan) -> None:
        """Open the ``publish_to`` producers and build each subscription's handler for ``plan``."""
        for sub in self.subscriptions:
            producer = None
            if sub.publish_to is not None:
                physical = plan.topics.get(sub.publish_to, sub.publish_to)
                producer = plan.producers.get(physical)
                if producer is None:
                    producer = plan.producers[physical] = plan.broker.topic(physical).producer()
                    await producer.open()  # ensures the topic
            returns = Returns(sub.name, sub.publish_to)
            returns.bind(plan.broker, producer)
            plan.handlers.append(compose(typed_handler(sub.handler, sub.shape, returns), self.middlewares))
            plan.concurrency.append(plan.overrides.get(sub.name, {}).get("concurrency", sub.concurrency))

    async def run(
        self,
        broker: Broker,
        *,
        stop: asyncio.Event | None = None,
        consumers: list[Consumer] | None = None,
        grace_period: float = 30.0,
        topics: Mapping[str, str] | None = None,
        overrides: Mapping[str, Mapping[str, int]] | None = None,
    ) -> None:
        """Run every subscription until ``stop`` is set, then stop gracefully, or until cancelled.

        Without ``consumers`` it calls :meth:`start` with ``topics`` and ``overrides`` first; with the
        consumers :meth:`start` returned, it uses the names and settings given to :meth:`start` there.
        Graceful stop: no more fetching; the handlers under way get ``grace_period`` seconds; what
        finished is acked, the rest is cancelled, never acked, and goes back to its group when the
        consumers close. Cancelling ``run`` stops at once. Consumers and producers are closed on return.
        """
        if grace_period < 0:
            raise ConfigurationError(f"grace_period must be >= 0 seconds, got {grace_period!r}")
        stop = stop or asyncio.Event()
        if consumers is None:
            consumers = await self.start(broker, topics=topics, overrides=overrides)
        plan = self._plans.pop(tuple(map(id, consumers)), None)
        if plan is None:  # consumers made by the caller: the code's names and settings
            if len(consumers) != len(self.subscriptions):
                raise ConfigurationError(
                    f"run() got {len(consumers)} consumers for {len(self.subscriptions)} subscriptions"
                )
            topic_map, checked = self._resolve(topics, overrides)
            plan = _Plan(broker, topic_map, checked, list(consumers), {}, [], [])
            try:
                await self._bind(plan)
            except BaseException:
                await _close(plan.consumers, plan.producers)
                raise
        elif (topics is not None and dict(topics) != plan.topics) or (
            overrides is not None and self._resolve(None, overrides)[1] != plan.overrides
        ):
            await _close(plan.consumers, plan.producers)
            raise ConfigurationError("pass topics and overrides to start(), which made these consumers")
        await self._run(plan, stop, grace_period)

    async def _run(self, plan: _Plan, stop: asyncio.Event, grace_period: float) -> None:
        runners = [
            asyncio.create_task(
                run_consumer(
                    consumer,
                    handler,
                    concurrency=concurrency,
                    retry_delay=sub.retry_delay,
                    stop=stop,
                    ordered_by_key=sub.ordered_by_key,
                ),
                name=f"polybus subscription {sub.name}",
            )
            for sub, consumer, handler, concurrency in zip(
                self.subscriptions, plan.consumers, plan.handlers, plan.concurrency, strict=True
            )
        ]
        stopping = asyncio.create_task(stop.wait())
        try:
            done, _ = await asyncio.wait([*runners, stopping], return_when=asyncio.FIRST_COMPLETED)
            for runner in done:
                if runner is not stopping and not runner.cancelled() and runner.exception() is not None:
                    raise runner.exception()  # type: ignore[misc]
            if stop.is_set():
                pending = {r for r in runners if not r.done()}
                if pending:
                    _, cut_off = await asyncio.wait(pending, timeout=grace_period)
                    if cut_off:
                        log.warning(
                            "grace period of %ss is over: cancelling the handlers of %d subscriptions "
                            "(their deliveries are not acked and go back to their groups)",
                            grace_period,
                            len(cut_off),
                        )
            else:
                await asyncio.gather(*runners)  # the consumers were closed from elsewhere
        finally:
            stopping.cancel()
            for runner in runners:
                runner.cancel()
            await asyncio.gather(*runners, stopping, return_exceptions=True)
            await _close(plan.consumers, plan.producers)


async def _close(consumers: list[Consumer], producers: Mapping[str, Producer]) -> None:
    for consumer in consumers:
        with contextlib.suppress(PolybusError):
            await consumer.aclose()
    for producer in producers.values():
        with contextlib.suppress(PolybusError):
            await producer.aclose()
