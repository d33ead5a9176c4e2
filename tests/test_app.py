"""The service runner: ack after the handler, nack on failure, reject on undecodable input,
middleware order, and a worker that survives every handler failure."""

import asyncio
import logging

import pytest

import polybus
from polybus.testing import unique_name


async def _setup(broker: polybus.Broker) -> tuple[polybus.Topic, polybus.Consumer]:
    topic = broker.topic(unique_name("app"))
    consumer = topic.consumer("g")
    await consumer.open()
    return topic, consumer


async def test_compose_runs_middlewares_first_listed_outermost() -> None:
    calls: list[str] = []

    def tag(name: str) -> polybus.Middleware:
        def middleware(handler: polybus.Handler) -> polybus.Handler:
            async def wrapped(delivery: polybus.Delivery) -> None:
                calls.append(f"{name}>")
                await handler(delivery)
                calls.append(f"<{name}")

            return wrapped

        return middleware

    async def handler(delivery: polybus.Delivery) -> None:
        calls.append("handler")

    await polybus.compose(handler, [tag("a"), tag("b")])(None)  # type: ignore[arg-type]
    assert calls == ["a>", "b>", "handler", "<b", "<a"]


async def test_runner_acks_after_success_and_retries_failures(caplog: pytest.LogCaptureFixture) -> None:
    attempts: list[int] = []
    finished = asyncio.Event()
    async with polybus.connect("memory://") as broker:
        topic, consumer = await _setup(broker)

        async def flaky(delivery: polybus.Delivery) -> None:
            attempts.append(delivery.attempt)
            if delivery.attempt < 3:
                raise RuntimeError("transient")
            finished.set()

        stop = asyncio.Event()
        runner = asyncio.create_task(polybus.run_consumer(consumer, flaky, retry_delay=0.05, stop=stop))
        async with topic.producer() as producer:
            await producer.send(b"x")
        await asyncio.wait_for(finished.wait(), 10)
        stop.set()
        await runner
        stats = await topic.stats()
    assert attempts == [1, 2, 3]
    assert stats.groups["g"].backlog == 0
    assert stats.groups["g"].in_flight == 0
    assert "handler failed" in caplog.text


async def test_runner_rejects_undecodable_payloads_and_keeps_going(caplog: pytest.LogCaptureFixture) -> None:
    good: list[int] = []
    async with polybus.connect("memory://") as broker:
        topic, consumer = await _setup(broker)

        async def handler(delivery: polybus.Delivery) -> None:
            good.append(delivery.decode(int))

        stop = asyncio.Event()
        runner = asyncio.create_task(polybus.run_consumer(consumer, handler, stop=stop, concurrency=2))
        async with topic.producer() as producer:
            await producer.send(b"{not json")
            await producer.send(7)
        for _ in range(200):
            if good:
                break
            await asyncio.sleep(0.01)
        stop.set()
        await runner
        stats = await topic.stats()
    assert good == [7]
    assert stats.groups["g"].backlog == 0, "the poison message was redelivered instead of rejected"
    with caplog.at_level(logging.ERROR):
        assert "cannot be decoded" in caplog.text


async def test_app_runs_subscriptions_until_stopped() -> None:
    app = polybus.App()
    seen: list[str] = []
    name = unique_name("svc")

    @app.subscribe(name, group="a")
    async def a(delivery: polybus.Delivery) -> None:
        seen.append("a:" + delivery.text())

    @app.subscribe(name, group="b", concurrency=3)
    async def b(delivery: polybus.Delivery) -> None:
        seen.append("b:" + delivery.text())

    async with polybus.connect("memory://") as broker:
        consumers = await app.start(broker)
        stop = asyncio.Event()
        task = asyncio.create_task(app.run(broker, stop=stop, consumers=consumers))
        async with broker.topic(name).producer() as producer:
            await producer.send("m")
        for _ in range(200):
            if len(seen) == 2:
                break
            await asyncio.sleep(0.01)
        stop.set()
        await task
        assert all(c.closed for c in consumers)
    assert sorted(seen) == ["a:m", "b:m"]


async def test_run_consumer_rejects_bad_concurrency() -> None:
    async with polybus.connect("memory://") as broker:
        _, consumer = await _setup(broker)
        with pytest.raises(ValueError, match="concurrency"):
            await polybus.run_consumer(consumer, lambda d: asyncio.sleep(0), concurrency=0)
