"""Typed App handlers on memory://: how bodies are decoded, who receives the delivery, what a bad body
does, where return values go (publish_to, reply address, several messages), and configuration errors."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pydantic
import pytest

import polybus
from polybus.testing import unique_name


class Order(pydantic.BaseModel):
    id: int
    total: float


class Invoice(pydantic.BaseModel):
    order_id: int
    total: float


@pytest.fixture
def broker() -> polybus.Broker:
    """A memory broker (opened on first use: fixtures are sync); it holds nothing outside the process."""
    return polybus.connect("memory://")


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait until ``condition()`` holds (fail after ``timeout`` seconds)."""
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110  # polling state the test cannot subscribe to
            await asyncio.sleep(0.005)


class Running:
    """An App running in the background on ``broker``; ``stop()`` stops it gracefully."""

    def __init__(self, app: polybus.App, broker: polybus.Broker, **options: Any) -> None:
        self.stop_event = asyncio.Event()
        self.app, self.broker, self.options = app, broker, options
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Running:
        consumers = await self.app.start(self.broker, **self.options)
        self.task = asyncio.create_task(self.app.run(self.broker, stop=self.stop_event, consumers=consumers))
        return self

    async def stop(self) -> None:
        self.stop_event.set()
        assert self.task is not None
        await asyncio.wait_for(self.task, 10)

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def send(broker: polybus.Broker, topic: str, *bodies: Any, key: str | None = None) -> list[str]:
    async with broker.topic(topic).producer() as producer:
        return [await producer.send(body, key=key) for body in bodies]


async def test_each_kind_of_first_parameter_decodes_the_body(broker: polybus.Broker) -> None:
    topic = unique_name("kinds")
    seen: dict[str, Any] = {}
    app = polybus.App()

    @app.subscribe(topic, group="raw")
    async def raw(body: bytes) -> None:
        seen["bytes"] = body

    @app.subscribe(topic, group="text")
    async def text(body: str) -> None:
        seen["str"] = body

    @app.subscribe(topic, group="mapping")
    async def mapping(body: dict[str, Any]) -> None:
        seen["dict"] = body

    @app.subscribe(topic, group="model")
    async def model(order: Order) -> None:
        seen["model"] = order

    @app.subscribe(topic, group="listed")
    async def listed(body: dict[str, float]) -> None:  # any type pydantic validates
        seen["validated"] = body

    @app.subscribe(topic, group="delivery")
    async def whole(delivery: polybus.Delivery) -> None:
        seen["delivery"] = delivery

    @app.subscribe(topic, group="plain")
    async def plain(delivery):  # type: ignore[no-untyped-def]  # the old shape keeps working
        seen["plain"] = delivery

    async with Running(app, broker):
        await send(broker, topic, {"id": 7, "total": 2.5})
        await until(lambda: len(seen) == 7)
    body = b'{"id":7,"total":2.5}'
    assert seen["bytes"] == body
    assert seen["str"] == body.decode()
    assert seen["dict"] == {"id": 7, "total": 2.5}
    assert seen["model"] == Order(id=7, total=2.5)
    assert seen["validated"] == {"id": 7.0, "total": 2.5}
    for name in ("delivery", "plain"):
        assert isinstance(seen[name], polybus.Delivery) and seen[name].body == body
        assert seen[name].outcome is polybus.Outcome.ACK


async def test_a_parameter_annotated_delivery_receives_it(broker: polybus.Broker) -> None:
    topic = unique_name("both")
    got: list[tuple[Order, polybus.Delivery, polybus.Delivery]] = []
    app = polybus.App()

    @app.subscribe(topic, group="g")
    async def handler(order: Order, delivery: polybus.Delivery, *, again: polybus.Delivery) -> None:
        got.append((order, delivery, again))

    async with Running(app, broker):
        await send(broker, topic, Order(id=1, total=3.0), key="k1")
        await until(lambda: bool(got))
    order, delivery, again = got[0]
    assert order == Order(id=1, total=3.0)
    assert delivery is again and delivery.key == "k1"


async def test_a_body_that_does_not_validate_is_rejected_logged_and_never_reaches_the_handler(
    broker: polybus.Broker, caplog: pytest.LogCaptureFixture
) -> None:
    topic = unique_name("bad")
    good: list[Order] = []
    app = polybus.App()

    @app.subscribe(topic, group="g", concurrency=2)
    async def handler(order: Order) -> None:
        good.append(order)

    caplog.set_level(logging.ERROR, "polybus")
    async with Running(app, broker):
        await send(
            broker,
            topic,
            {"id": "not a number", "total": 1},
            b"{not json",
            b"\xff\xfe",
            {"id": 2, "total": 1},
        )
        await until(lambda: len(good) == 1)
        stats = await broker.topic(topic).stats()
    assert good == [Order(id=2, total=1)]
    assert stats.groups["g"].backlog == 0 and stats.groups["g"].in_flight == 0, "a bad body was redelivered"
    rejected = [r for r in caplog.records if "cannot be decoded" in r.getMessage()]
    assert len(rejected) == 3
    assert "does not decode as Order" in rejected[0].getMessage()
    assert "id: Input should be a valid integer" in rejected[0].getMessage()
    assert "not a number" not in caplog.text, "the body is echoed in the log"


async def test_return_value_goes_to_publish_to_with_key_and_causation(broker: polybus.Broker) -> None:
    orders, invoices = unique_name("orders"), unique_name("invoices")
    mailed: list[tuple[Invoice, polybus.Delivery]] = []
    app = polybus.App()

    @app.subscribe(orders, group="billing", concurrency=8, publish_to=invoices)
    async def bill(order: Order) -> Invoice:
        return Invoice(order_id=order.id, total=order.total)

    @app.subscribe(invoices, group="mailer")
    async def mail(invoice: Invoice, delivery: polybus.Delivery) -> None:
        mailed.append((invoice, delivery))

    async with Running(app, broker):
        [order_id] = await send(broker, orders, Order(id=5, total=9.5), key="customer-1")
        await until(lambda: bool(mailed))
    invoice, delivery = mailed[0]
    assert invoice == Invoice(order_id=5, total=9.5)
    assert delivery.key == "customer-1"
    assert delivery.headers[polybus.CAUSATION_HEADER] == order_id


async def test_returned_message_ids_are_derived_from_the_input_id(broker: polybus.Broker) -> None:
    source, target = unique_name("src"), unique_name("dst")
    out: list[polybus.Delivery] = []
    calls = 0
    app = polybus.App()

    @app.subscribe(source, group="g", publish_to=target, retry_delay=0.01)
    async def handler(body: bytes) -> bytes:
        nonlocal calls
        calls += 1
        return body  # published, then the handler's delivery is nacked below once by a middleware

    failed_once: set[str] = set()

    def fail_after_publish_once(inner: polybus.Handler) -> polybus.Handler:
        async def wrapped(delivery: polybus.Delivery) -> None:
            await inner(delivery)
            if delivery.topic == source and delivery.id not in failed_once:
                failed_once.add(delivery.id)
                raise RuntimeError("crash after publishing")

        return wrapped

    app.middlewares.append(fail_after_publish_once)

    @app.subscribe(target, group="watch")
    async def watch(delivery: polybus.Delivery) -> None:
        out.append(delivery)

    async with Running(app, broker):
        await send(broker, source, b"payload")
        await until(lambda: len(out) == 2)
    assert calls == 2
    assert out[0].id == out[1].id, "a redelivered input re-published under a new id: dedup cannot drop it"
    assert out[0].body == out[1].body == b"payload"


async def test_a_list_of_messages_is_published_as_several(broker: polybus.Broker) -> None:
    source, target = unique_name("src"), unique_name("parts")
    parts: list[polybus.Delivery] = []
    app = polybus.App()

    @app.subscribe(source, group="splitter", publish_to=target)
    async def split(body: str) -> list[polybus.Message]:
        return [polybus.Message.of(word, key=word if word == "b" else None) for word in body.split()]

    @app.subscribe(target, group="g")
    async def collect(delivery: polybus.Delivery) -> None:
        parts.append(delivery)

    async with Running(app, broker):
        [source_id] = await send(broker, source, "a b c", key="sentence")
        await until(lambda: len(parts) == 3)
    assert sorted(p.text() for p in parts) == ["a", "b", "c"]
    keys = {p.text(): p.key for p in parts}
    assert keys == {"a": "sentence", "b": "b", "c": "sentence"}, "a message's own key wins, else the input's"
    assert {p.headers[polybus.CAUSATION_HEADER] for p in parts} == {source_id}


async def test_a_request_gets_its_reply_at_its_address(broker: polybus.Broker) -> None:
    topic = unique_name("quotes")
    app = polybus.App()

    @app.subscribe(topic, group="pricing")
    async def quote(order: Order) -> Invoice:  # no publish_to: the replies go to the reply addresses
        return Invoice(order_id=order.id, total=order.total * 2)

    async with Running(app, broker), broker.inbox() as inbox:
        request = polybus.Message.of(Order(id=3, total=4.0), headers={polybus.CORRELATION_HEADER: "c-1"})
        request_id = await inbox.request(topic, request)
        reply = await inbox.receive(timeout=5)
    assert reply is not None
    assert reply.decode(Invoice) == Invoice(order_id=3, total=8.0)
    assert reply.headers[polybus.CORRELATION_HEADER] == "c-1"
    assert reply.headers[polybus.CAUSATION_HEADER] == request_id


class QuoteRefused(Exception):
    pass


async def test_a_request_whose_handler_raises_gets_an_error_reply_and_is_acked(
    broker: polybus.Broker,
) -> None:
    topic = unique_name("quotes")
    calls: list[int] = []
    app = polybus.App()

    @app.subscribe(topic, group="pricing")
    async def quote(order: Order) -> Invoice:
        calls.append(order.id)
        raise QuoteRefused("x" * 5000)

    async with Running(app, broker), broker.inbox() as inbox:
        headers = {polybus.CORRELATION_HEADER: "c-2"}
        await inbox.request(topic, polybus.Message.of(Order(id=4, total=1), headers=headers))
        reply = await inbox.receive(timeout=5)
        bad = polybus.Message.of(b"{nope", headers={polybus.CORRELATION_HEADER: "c-3"})
        await inbox.request(topic, bad)
        decode_reply = await inbox.receive(timeout=5)
        await asyncio.sleep(0.1)
        stats = await broker.topic(topic).stats()
    assert reply is not None and reply.body == b""
    assert reply.headers[polybus.ERROR_TYPE_HEADER] == f"{__name__}.QuoteRefused"
    assert reply.headers[polybus.ERROR_HEADER] == "x" * 1000
    assert reply.headers[polybus.CORRELATION_HEADER] == "c-2"
    assert decode_reply is not None
    assert decode_reply.headers[polybus.ERROR_TYPE_HEADER] == "polybus.DecodeError"
    assert decode_reply.headers[polybus.CORRELATION_HEADER] == "c-3"
    assert calls == [4], "the failed request was redelivered, or the bad one reached the handler"
    assert stats.groups["pricing"].backlog == 0 and stats.groups["pricing"].in_flight == 0


async def test_a_value_with_nowhere_to_go_is_dropped_and_logged_once(
    broker: polybus.Broker, caplog: pytest.LogCaptureFixture
) -> None:
    topic = unique_name("t")
    handled: list[int] = []
    app = polybus.App()

    @app.subscribe(topic, group="g")
    async def handler(order: Order) -> Invoice:
        handled.append(order.id)
        return Invoice(order_id=order.id, total=0)

    caplog.set_level(logging.WARNING, "polybus")
    async with Running(app, broker):
        await send(broker, topic, *[Order(id=i, total=0) for i in range(3)])
        await until(lambda: len(handled) == 3)
    warnings = [r for r in caplog.records if "neither a request nor has publish_to" in r.getMessage()]
    assert len(warnings) == 1
    assert "'handler'" in warnings[0].getMessage()


async def test_topics_map_logical_names_to_physical_ones(broker: polybus.Broker) -> None:
    physical_in, physical_out = unique_name("prod-orders"), unique_name("prod-invoices")
    got: list[Invoice] = []
    app = polybus.App()

    @app.subscribe("orders", group="billing", publish_to="invoices")
    async def bill(order: Order) -> Invoice:
        return Invoice(order_id=order.id, total=order.total)

    @app.subscribe("invoices", group="mailer")
    async def mail(invoice: Invoice) -> None:
        got.append(invoice)

    async with Running(app, broker, topics={"orders": physical_in, "invoices": physical_out}):
        await send(broker, physical_in, Order(id=1, total=2))
        await until(lambda: bool(got))
        stats = await broker.topic(physical_out).stats()
    assert got == [Invoice(order_id=1, total=2)]
    assert "mailer" in stats.groups


async def test_start_declares_every_group_and_publish_to_topic_before_traffic(broker: polybus.Broker) -> None:
    source, target = unique_name("src"), unique_name("dst")
    app = polybus.App()

    @app.subscribe(source, group="g", publish_to=target)
    async def handler(body: bytes) -> bytes:
        return body

    consumers = await app.start(broker)
    try:
        assert "g" in (await broker.topic(source).stats()).groups
        await broker.topic(target).stats()  # exists: no NotFoundError
    finally:
        stop = asyncio.Event()
        stop.set()
        await app.run(broker, stop=stop, consumers=consumers)
    assert all(c.closed for c in consumers)


async def test_overrides_set_concurrency_and_prefetch_by_subscription_name(broker: polybus.Broker) -> None:
    topic = unique_name("t")
    running = 0
    peak = 0
    done = 0
    app = polybus.App()

    @app.subscribe(topic, group="g", name="work")
    async def handler(body: bytes) -> None:
        nonlocal running, peak, done
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.02)
        running -= 1
        done += 1

    consumers = await app.start(broker, overrides={"work": {"concurrency": 4, "prefetch": 7}})
    assert consumers[0].prefetch == 7
    stop = asyncio.Event()
    task = asyncio.create_task(app.run(broker, stop=stop, consumers=consumers))
    await send(broker, topic, *[b"x"] * 20)
    await until(lambda: done == 20)
    stop.set()
    await task
    assert peak == 4


def _app_with(*handlers: tuple[Callable[..., Awaitable[Any]], dict[str, Any]]) -> polybus.App:
    app = polybus.App()
    for handler, options in handlers:
        app.subscribe("t", **options)(handler)
    return app


async def body_handler(order: Order) -> None: ...


async def returns_none(order: Order) -> None: ...


async def unannotated_first(order, delivery: polybus.Delivery) -> None: ...  # type: ignore[no-untyped-def]


async def extra_required(order: Order, other: int) -> None: ...


def not_async(order: Order) -> None: ...


@pytest.mark.parametrize(
    ("handler", "options", "match"),
    [
        (returns_none, {"publish_to": "out"}, "annotated to return None"),
        (unannotated_first, {}, "annotate its first parameter"),
        (extra_required, {}, "must be annotated polybus.Delivery"),
        (not_async, {}, "must be an async function"),
        (body_handler, {"concurrency": 0}, "concurrency"),
        (body_handler, {"prefetch": 0}, "prefetch"),
    ],
)
def test_subscribe_refuses_handlers_it_cannot_run(handler: Any, options: dict[str, Any], match: str) -> None:
    with pytest.raises(polybus.ConfigurationError, match=match):
        polybus.App().subscribe("t", **options)(handler)


def test_subscription_names_are_unique() -> None:
    app = polybus.App()
    app.subscribe("t", group="a")(body_handler)
    with pytest.raises(polybus.ConfigurationError, match="two subscriptions are named 'body_handler'"):
        app.subscribe("u", group="b")(body_handler)
    app.subscribe("u", group="b", name="second")(body_handler)
    assert [s.name for s in app.subscriptions] == ["body_handler", "second"]


def test_a_forward_reference_that_does_not_resolve_is_a_configuration_error() -> None:
    async def handler(order: Missing) -> None: ...  # type: ignore[name-defined]  # noqa: F821

    with pytest.raises(polybus.ConfigurationError, match="cannot resolve the annotations"):
        polybus.App().subscribe("t")(handler)


async def test_unknown_subscription_in_overrides_is_refused_before_anything_opens(
    broker: polybus.Broker,
) -> None:
    app = _app_with((body_handler, {"group": "g"}))
    with pytest.raises(polybus.ConfigurationError, match=r"'typo'.*it has: body_handler"):
        await app.start(broker, overrides={"typo": {"concurrency": 2}})
    with pytest.raises(polybus.ConfigurationError, match="override 'threads'"):
        await app.run(broker, overrides={"body_handler": {"threads": 2}})
    with pytest.raises(polybus.ConfigurationError, match="must be a whole number"):
        await app.start(broker, overrides={"body_handler": {"concurrency": 0}})
    assert not broker._children, "something was opened before the configuration was checked"


async def test_a_request_with_a_forged_reply_address_is_rejected_not_redelivered(
    broker: polybus.Broker, caplog: pytest.LogCaptureFixture
) -> None:
    # found by tests/chaos/test_bad_input.py: the reply, then the error reply, raised
    # ConfigurationError (no inbox address), and the request was nacked and redelivered forever
    topic = unique_name("forged")
    calls: list[int] = []
    app = polybus.App()

    @app.subscribe(topic, group="g", retry_delay=0.05)
    async def responder(order: Order) -> dict[str, int]:
        calls.append(order.id)
        return {"id": order.id}

    caplog.set_level(logging.ERROR, "polybus")
    async with Running(app, broker):
        async with broker.topic(topic).producer() as producer:
            await producer.send(
                polybus.Message.of({"id": 1, "total": 1}, headers={polybus.REPLY_TO_HEADER: "not-an-inbox"})
            )
        await until(lambda: any("rejecting request" in r.getMessage() for r in caplog.records))
        await asyncio.sleep(0.3)  # a nack every 0.05 s would have come back several times by now
        stats = await broker.topic(topic).stats()
    assert calls == [1]
    assert stats.groups["g"].backlog == 0 and stats.groups["g"].in_flight == 0
