"""Services written once, on every broker: a typed two-stage pipeline with malformed input mixed in,
and ordered competing consumers (``ordered_by_key``) on one process. One body per case; the only
branch is the capability check for per-key order."""

from __future__ import annotations

import asyncio
import collections
import logging
import re
import time
from collections.abc import Callable

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


class Step(pydantic.BaseModel):
    n: int


async def _until(condition: Callable[[], bool], timeout: float, what: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not done within {timeout}s: {what()}")
        await asyncio.sleep(0.05)


async def _run_app(app: polybus.App, broker: polybus.Broker) -> tuple[asyncio.Event, asyncio.Task[None]]:
    consumers = await app.start(broker)  # every group exists before the first publish
    stop = asyncio.Event()
    return stop, asyncio.create_task(app.run(broker, stop=stop, consumers=consumers, grace_period=10))


async def test_pipeline_bills_and_mails_every_order_and_rejects_malformed_ones(
    service_url: str, scaled: Callable[[int], int], caplog: pytest.LogCaptureFixture
) -> None:
    orders, invoices = unique_name("orders"), unique_name("invoices")
    # each order costs two publishes and two receives: where a broker's volumes are scaled (SQS on moto
    # receives ~40 messages/s), this case is scaled twice over to stay within a minute
    total, malformed = scaled(scaled(10_000)), scaled(100)
    mailed: collections.Counter[int] = collections.Counter()
    billed = 0
    app = polybus.App()

    @app.subscribe(orders, group="billing", concurrency=8, publish_to=invoices)
    async def bill(order: Order) -> Invoice:
        nonlocal billed
        billed += 1
        return Invoice(order_id=order.id, total=order.total)

    @app.subscribe(invoices, group="mailer", concurrency=8)
    async def mail(invoice: Invoice, delivery: polybus.Delivery) -> None:
        assert delivery.headers[polybus.CAUSATION_HEADER]
        mailed[invoice.order_id] += 1

    caplog.set_level(logging.ERROR, "polybus")
    began = time.monotonic()
    async with polybus.connect(service_url) as broker:
        stop, running = await _run_app(app, broker)
        bad_every = total // malformed
        items: list[polybus.Message] = []
        bad_ids: set[str] = set()
        for i in range(total):
            items.append(polybus.Message.of(Order(id=i, total=i / 2), key=f"customer-{i % 97}"))
            if i % bad_every == 0 and len(bad_ids) < malformed:
                bad = polybus.Message.of({"id": f"order {i}", "total": "lots"})
                bad_ids.add(bad.id)
                items.append(bad)
        async with broker.topic(orders).producer() as producer:
            for start in range(0, len(items), 500):
                await producer.send_many(items[start : start + 500])
        await _until(
            lambda: len(mailed) == total, 120, lambda: f"{len(mailed)} of {total} mailed, {billed} billed"
        )
        await asyncio.sleep(0.2)  # let the last rejects be logged
        stop.set()
        await running
    took = time.monotonic() - began
    assert set(mailed) == set(range(total)), "an order was lost"
    rejected = {
        match.group(1)
        for record in caplog.records
        if "cannot be decoded" in record.getMessage()
        for match in [re.search(r"id='([0-9a-f]+)'", record.getMessage())]
        if match
    }
    assert rejected == bad_ids, "a malformed order was not rejected, or a good one was"
    assert "does not decode as Order: id: Input should be a valid integer" in caplog.text
    print(f"[{total} orders, {malformed} malformed: {took:.1f}s]", end=" ")


async def test_ordered_by_key_runs_each_key_alone_and_in_send_order(
    service_url: str, scaled: Callable[[int], int]
) -> None:
    topic = unique_name("ordered")
    keys, per_key = 50, scaled(200)
    active: collections.Counter[str] = collections.Counter()
    overlaps = 0
    seen: dict[str, list[int]] = collections.defaultdict(list)
    running_now = 0
    peak = 0
    app = polybus.App()

    @app.subscribe(topic, group="ordered", concurrency=16, ordered_by_key=True)
    async def handle(step: Step, delivery: polybus.Delivery) -> None:
        nonlocal overlaps, running_now, peak
        key = delivery.key
        assert key is not None
        if active[key]:
            overlaps += 1
        active[key] += 1
        running_now += 1
        peak = max(peak, running_now)
        await asyncio.sleep(0)  # let the others in: an overlap would show
        seen[key].append(step.n)
        active[key] -= 1
        running_now -= 1

    began = time.monotonic()
    async with polybus.connect(service_url) as broker:
        if not broker.capabilities.ordering_per_key:
            with pytest.raises(polybus.UnsupportedCapabilityError, match="ordered_by_key"):
                await app.start(broker)
            return
        stop, running = await _run_app(app, broker)
        async with broker.topic(topic).producer() as producer:
            batch: list[polybus.Message] = []
            for n in range(per_key):
                batch.extend(polybus.Message.of(Step(n=n), key=f"key-{k}") for k in range(keys))
                if len(batch) >= 500:
                    await producer.send_many(batch)
                    batch = []
            await producer.send_many(batch)
        done = lambda: sum(map(len, seen.values()))  # noqa: E731
        await _until(lambda: done() >= keys * per_key, 120, lambda: f"{done()} of {keys * per_key} handled")
        stop.set()
        await running
    took = time.monotonic() - began
    assert overlaps == 0, "two runs of one key overlapped"
    for k in range(keys):
        assert seen[f"key-{k}"] == list(range(per_key)), f"key-{k} ran out of send order"
    assert peak > 1, "keys never ran in parallel"
    print(f"[{keys}x{per_key} ordered: {took:.1f}s, peak {peak} handlers]", end=" ")


class QuoteRequest(pydantic.BaseModel):
    item: str
    quantity: int


class Quote(pydantic.BaseModel):
    item: str
    price: float


class OutOfStock(Exception):
    pass


async def test_an_app_handler_answers_requests_with_its_return_value(
    service_url: str, scaled: Callable[[int], int]
) -> None:
    from polybus_patterns import RemoteError, Requester

    quotes = unique_name("quotes")
    app = polybus.App()

    @app.subscribe(quotes, group="pricing", concurrency=4)
    async def quote(req: QuoteRequest) -> Quote:  # no publish_to: the return value is the reply
        if req.item == "unobtainium":
            raise OutOfStock(f"no {req.item} left")
        return Quote(item=req.item, price=req.quantity * 1.5)

    count = scaled(50)
    async with polybus.connect(service_url) as broker:
        stop, running = await _run_app(app, broker)
        async with Requester(broker) as requester:

            async def ask(n: int) -> Quote:
                reply = await requester.request(quotes, QuoteRequest(item=f"i{n}", quantity=n), timeout=10)
                return reply.decode(Quote)

            answers = await asyncio.gather(*(ask(n) for n in range(count)))
            with pytest.raises(RemoteError) as failed:
                await requester.request(quotes, QuoteRequest(item="unobtainium", quantity=1), timeout=10)
            with pytest.raises(RemoteError) as malformed:
                await requester.request(quotes, {"item": "x"}, timeout=10)
        stop.set()
        await running
    assert answers == [Quote(item=f"i{n}", price=n * 1.5) for n in range(count)]
    assert failed.value.type == f"{__name__}.OutOfStock"
    assert failed.value.message == "no unobtainium left"
    assert malformed.value.type == "polybus.DecodeError"
    assert "quantity: Field required" in malformed.value.message
