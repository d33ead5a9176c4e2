"""Running an App on memory://: per-key order with ``ordered_by_key``, the in-flight bound, and the
graceful stop (finished handlers acked, handlers cut off at the grace period never acked)."""

from __future__ import annotations

import asyncio
import collections
import dataclasses

import pytest

import polybus
from polybus.testing import unique_name

from .test_app_typed import Running, send, until


class KeyLog:
    """Records handler runs per key: overlaps and the order bodies were handled in."""

    def __init__(self) -> None:
        self.active: collections.Counter[str | None] = collections.Counter()
        self.overlaps = 0
        self.order: dict[str | None, list[int]] = collections.defaultdict(list)
        self.running = 0
        self.peak = 0
        self.done = 0

    async def run(self, key: str | None, n: int, pause: float) -> None:
        if key is not None and self.active[key]:
            self.overlaps += 1
        self.active[key] += 1
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            await asyncio.sleep(pause)
            self.order[key].append(n)
        finally:
            self.active[key] -= 1
            self.running -= 1
            self.done += 1


async def test_ordered_by_key_runs_one_key_at_a_time_in_order_and_keys_in_parallel() -> None:
    topic = unique_name("ordered")
    log = KeyLog()
    app = polybus.App()

    @app.subscribe(topic, group="g", concurrency=8, ordered_by_key=True, prefetch=64)
    async def handler(n: int, delivery: polybus.Delivery) -> None:
        await log.run(delivery.key, n, 0.001 * (n % 3))

    keys, per_key = 20, 40
    async with polybus.connect("memory://") as broker, Running(app, broker):
        async with broker.topic(topic).producer() as producer:
            messages = [polybus.Message.of(n, key=f"k{k}") for n in range(per_key) for k in range(keys)]
            await producer.send_many(messages)
        await until(lambda: log.done == keys * per_key, timeout=30)
    assert log.overlaps == 0
    assert all(log.order[f"k{k}"] == list(range(per_key)) for k in range(keys))
    assert 1 < log.peak <= 8, "keys did not run in parallel, or more than `concurrency` ran at once"


async def test_unkeyed_messages_run_freely_when_ordered_by_key() -> None:
    topic = unique_name("unkeyed")
    log = KeyLog()
    app = polybus.App()

    @app.subscribe(topic, group="g", concurrency=5, ordered_by_key=True)
    async def handler(n: int) -> None:
        await log.run(None, n, 0.05)

    async with polybus.connect("memory://") as broker, Running(app, broker):
        await send(broker, topic, *range(10))
        await until(lambda: log.done == 10)
    assert log.peak == 5


@pytest.mark.parametrize("ordered", [False, True])
async def test_a_slow_handler_slows_fetching_within_prefetch(ordered: bool) -> None:
    topic = unique_name("slow")
    release = asyncio.Event()
    started = 0
    app = polybus.App()

    @app.subscribe(topic, group="g", concurrency=2, prefetch=10, ordered_by_key=ordered)
    async def handler(body: bytes) -> None:
        nonlocal started
        started += 1
        await release.wait()

    async with polybus.connect("memory://") as broker:
        consumers = await app.start(broker)
        stop = asyncio.Event()
        task = asyncio.create_task(app.run(broker, stop=stop, consumers=consumers))
        async with broker.topic(topic).producer() as producer:
            await producer.send_many([polybus.Message.of(b"x", key="same") for _ in range(200)])
        await until(lambda: consumers[0].in_flight == 10)
        await asyncio.sleep(0.3)  # nothing more is fetched while the handlers are stuck
        in_flight, stats = consumers[0].in_flight, await broker.topic(topic).stats()
        release.set()
        await until(lambda: started == 200, timeout=10)
        stop.set()
        await task
    assert in_flight == 10
    assert stats.groups["g"].backlog == 190
    assert stats.groups["g"].in_flight == 10


async def test_ordered_by_key_needs_per_key_order_from_the_broker() -> None:
    app = polybus.App()

    @app.subscribe(unique_name("t"), group="g", ordered_by_key=True)
    async def handler(body: bytes) -> None: ...

    async with polybus.connect("memory://") as broker:
        broker.capabilities = dataclasses.replace(
            broker.capabilities, ordering_per_key=polybus.Support.UNSUPPORTED
        )
        with pytest.raises(polybus.UnsupportedCapabilityError, match="ordered_by_key"):
            await app.start(broker)


class Gate:
    """Handlers that take ``seconds``, and which deliveries finished."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.started: list[str] = []
        self.finished: list[str] = []

    async def __call__(self, delivery: polybus.Delivery) -> None:
        self.started.append(delivery.id)
        await asyncio.sleep(self.seconds)
        self.finished.append(delivery.id)


async def _stop_with_handlers_running(
    seconds: float, grace: float, ordered: bool
) -> tuple[Gate, list[str], float, list[str]]:
    """Eight handlers of ``seconds`` each in flight (four more deliveries held, not started), then a
    graceful stop with ``grace``; returns the gate, the ids sent, how long the stop took, and the ids
    another consumer then receives."""
    topic = unique_name("grace")
    gate = Gate(seconds)
    app = polybus.App()
    app.subscribe(topic, group="g", concurrency=8, prefetch=12, ordered_by_key=ordered, name="slow")(gate)
    loop = asyncio.get_running_loop()
    async with polybus.connect("memory://") as broker:
        consumers = await app.start(broker)
        stop = asyncio.Event()
        task = asyncio.create_task(app.run(broker, stop=stop, consumers=consumers, grace_period=grace))
        async with broker.topic(topic).producer() as producer:  # 8 run, 4 wait: behind a key, or fetched
            ids = await producer.send_many([polybus.Message.of(b"x", key=f"k{i % 8}") for i in range(12)])
        await until(lambda: len(gate.started) == 8 and consumers[0].in_flight == 12)
        began = loop.time()
        stop.set()
        await asyncio.wait_for(task, grace + 10)
        took = loop.time() - began
        redelivered: list[str] = []
        async with broker.topic(topic).consumer("g") as other:
            while (delivery := await other.receive(timeout=0.5)) is not None:
                redelivered.append(delivery.id)
                await delivery.ack()
    return gate, ids, took, redelivered


@pytest.mark.parametrize("ordered", [False, True])
async def test_graceful_stop_lets_running_handlers_finish_and_acks_them(ordered: bool) -> None:
    gate, ids, took, redelivered = await _stop_with_handlers_running(seconds=0.5, grace=5.0, ordered=ordered)
    assert len(gate.finished) == 8 and set(gate.finished) == set(gate.started)
    assert took < 5.0
    assert sorted(redelivered) == sorted(set(ids) - set(gate.finished)), (
        "a waiting delivery was started or lost"
    )


@pytest.mark.parametrize("ordered", [False, True])
async def test_handlers_cut_off_by_the_grace_period_are_never_acked_and_come_back(ordered: bool) -> None:
    gate, ids, took, redelivered = await _stop_with_handlers_running(seconds=30.0, grace=0.3, ordered=ordered)
    assert gate.finished == [] and len(gate.started) == 8
    assert took < 5.0
    assert sorted(redelivered) == sorted(ids)


async def test_cancelling_run_stops_at_once_and_hands_back_what_is_unfinished() -> None:
    topic = unique_name("cancel")
    gate = Gate(30.0)
    app = polybus.App()
    app.subscribe(topic, group="g", concurrency=4)(gate)
    async with polybus.connect("memory://") as broker:
        consumers = await app.start(broker)
        task = asyncio.create_task(app.run(broker, consumers=consumers))
        ids = await send(broker, topic, *[b"x"] * 4)
        await until(lambda: len(gate.started) == 4)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 5)
        assert all(c.closed for c in consumers)
        stats = await broker.topic(topic).stats()
    assert gate.finished == []
    assert stats.groups["g"].in_flight == 0
    assert stats.groups["g"].backlog == len(ids)


@pytest.mark.parametrize("ordered", [False, True])
async def test_a_handler_cancelled_on_its_own_counts_as_failed_and_the_runner_goes_on(ordered: bool) -> None:
    """A ``CancelledError`` out of a handler while ``run_consumer`` itself is not cancelled: the
    delivery is nacked (never acked, never left held), the one worker goes on and handles it again,
    then the next message. (Before: the worker ended, the runner returned, the delivery stayed held.)"""
    topic = unique_name("self-cancel")
    attempts: list[tuple[str, int]] = []

    async def handler(delivery: polybus.Delivery) -> None:
        attempts.append((delivery.body.decode(), delivery.attempt))
        if delivery.attempt == 1 and delivery.body == b"first":
            task = asyncio.current_task()
            assert task is not None
            task.cancel()
            await asyncio.sleep(1)  # cancelled here

    async with (
        polybus.connect("memory://") as broker,
        broker.topic(topic).consumer("g", prefetch=1) as consumer,
    ):
        await send(broker, topic, b"first", b"second")
        stop = asyncio.Event()
        runner = asyncio.create_task(
            polybus.run_consumer(consumer, handler, retry_delay=0, stop=stop, ordered_by_key=ordered)
        )
        await until(lambda: len(attempts) == 3)
        assert not runner.done()
        stop.set()
        await asyncio.wait_for(runner, 5)
        assert consumer.in_flight == 0
        stats = await broker.topic(topic).stats()
    assert sorted(attempts) == [("first", 1), ("first", 2), ("second", 1)]
    assert stats.groups["g"].backlog == 0
