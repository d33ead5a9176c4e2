"""The idempotent consumer as App middleware, on memory:// and the five real brokers.

One body per case: 10,000 keys (scaled) half of them sent twice, four competing consumers, each key's
side effect exactly once; the same with one consumer process SIGKILLed halfway and restarted (Redis
and PostgreSQL stores, side effects written by the inbox form); and the middleware's rules (done keys
skipped, a copy that finds the key busy comes back later, a failure releases the claim, groups do
not share keys) on memory://. The only per-broker table is ``FAST_LEASE``: URL options that make a
dead consumer's deliveries come back within seconds, as the brokers' own contract tests use.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from polybus_patterns import (
    Claim,
    ClaimState,
    IdempotencyStoreError,
    MemoryStore,
    PostgresStore,
    RedisStore,
    idempotent,
)

import polybus
from polybus.testing import unique_name, with_options
from polybus.testing.plugin import broker_url

POSTGRES_DSN = os.environ.get("POLYBUS_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")

FAST_LEASE: dict[str, dict[str, object]] = {
    "redis": {"visibility_timeout": 2, "claim_interval": 0.5},
    "nats": {"ack_wait": 2},
    "sqs": {"visibility_timeout": 2},
    "kafka": {"session_timeout_ms": 2000, "heartbeat_interval_ms": 400, "rebalance_timeout_ms": 3000},
}
"""URL options under which a killed consumer's deliveries go back to the group within a few seconds
(RabbitMQ does so when the connection drops)."""

WORKER = Path(__file__).with_name("idem_worker.py")

_CI = bool(os.environ.get("CI"))
ORDERS = int(os.environ.get("POLYBUS_IDEM_ORDERS", 3000 if _CI else 10_000))
"""Orders of the four-consumer case (half of them sent twice): 10,000, scaled down to 3,000 under CI."""
KILL_ORDERS = int(os.environ.get("POLYBUS_IDEM_KILL_ORDERS", 1000 if _CI else 4000))
"""Orders of the SIGKILL case (ten runs: five brokers, two stores): 4,000, 1,000 under CI."""


async def _until(condition: Callable[[], Any], timeout: float, what: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not done within {timeout}s: {what()}")
        await asyncio.sleep(0.1)


def _orders(count: int) -> list[polybus.Message]:
    """``count`` orders, every other one sent twice: as a new message (its own id) with the same
    ``order`` header, ten messages later, so that the copies meet at different consumers."""
    messages: list[polybus.Message] = []
    for i in range(count):
        messages.append(polybus.Message.of({"n": i}, headers={"order": str(i)}))
        if i % 2 == 0 and i >= 10:
            j = i - 10
            messages.append(polybus.Message.of({"n": j}, headers={"order": str(j)}))
    for j in range(0, min(10, count), 2):
        messages.append(polybus.Message.of({"n": j}, headers={"order": str(j)}))
    return messages


async def _start(app: polybus.App, broker: polybus.Broker) -> tuple[asyncio.Event, asyncio.Task[None]]:
    consumers = await app.start(broker)
    stop = asyncio.Event()
    return stop, asyncio.create_task(app.run(broker, stop=stop, consumers=consumers, grace_period=10))


async def _four_consumers(url: str, total: int, store: Any) -> tuple[collections.Counter[str], int, float]:
    """Run four competing App consumers with ``idempotent(store)`` over ``_orders(total)``; returns the
    side effects per order, the deliveries the middleware saw and the seconds it took."""
    topic, group = unique_name("idem"), "billing"
    effects: collections.Counter[str] = collections.Counter()
    seen = 0

    def count(handler: polybus.Handler) -> polybus.Handler:
        async def counted(delivery: polybus.Delivery) -> None:
            nonlocal seen
            seen += 1
            await handler(delivery)

        return counted

    async def handle(delivery: polybus.Delivery) -> None:
        effects[delivery.headers["order"]] += 1
        await asyncio.sleep(0)  # let the other consumers interleave

    messages = _orders(total)
    began = time.monotonic()
    async with polybus.connect(url) as broker:
        runs = []
        for _ in range(4):
            app = polybus.App(
                middlewares=[count, idempotent(store, key=lambda d: d.headers["order"], lease=2, ttl=600)]
            )
            app.subscribe(topic, group, concurrency=8, retry_delay=0.2)(handle)
            runs.append(await _start(app, broker))
        async with broker.topic(topic).producer() as producer:
            for start in range(0, len(messages), 500):
                await producer.send_many(messages[start : start + 500])

        async def settled() -> bool:
            return len(effects) == total and seen >= len(messages)

        await _until(settled, 240, lambda: f"{len(effects)} of {total} orders, {seen} deliveries")
        await asyncio.sleep(1.0)  # anything more would show up now
        for stop, _ in runs:
            stop.set()
        await asyncio.gather(*(task for _, task in runs))
    return effects, seen, time.monotonic() - began


async def test_four_consumers_run_each_order_once(service_url: str, scaled: Callable[[int], int]) -> None:
    total = scaled(ORDERS)
    async with RedisStore(broker_url("redis"), prefix=unique_name("idem") + ":") as store:
        effects, seen, took = await _four_consumers(service_url, total, store)
    assert len(effects) == total
    assert set(effects.values()) == {1}, collections.Counter(effects.values())
    assert seen >= len(_orders(total))  # every copy reached a consumer, and was skipped
    print(f"\n[{total} orders, {seen} deliveries in {took:.1f}s]", end=" ")


@pytest.mark.parametrize("store_kind", ["memory", "postgres"])
async def test_four_consumers_on_memory_with_the_other_stores(store_kind: str, pg_table: str) -> None:
    store = MemoryStore() if store_kind == "memory" else PostgresStore(POSTGRES_DSN, table=pg_table)
    async with store:
        effects, seen, _ = await _four_consumers("memory://", 2000, store)
    assert len(effects) == 2000 and set(effects.values()) == {1}
    assert seen >= len(_orders(2000))


async def test_a_message_sent_twice_with_its_id_runs_once(service_url: str) -> None:
    """The default key: the message id (on NATS JetStream the broker already drops the re-send)."""
    topic, runs = unique_name("idem"), collections.Counter[str]()
    app = polybus.App(middlewares=[idempotent(MemoryStore())])

    @app.subscribe(topic, "g", concurrency=4)
    async def handle(delivery: polybus.Delivery) -> None:
        runs[delivery.id] += 1

    messages = [polybus.Message.of(i) for i in range(50)]
    async with polybus.connect(service_url) as broker:
        stop, task = await _start(app, broker)
        async with broker.topic(topic).producer() as producer:
            await producer.send_many(messages)
            await producer.send_many(messages)

        async def all_ran() -> bool:
            return len(runs) == 50

        await _until(all_ran, 60, lambda: f"{len(runs)} of 50")
        await asyncio.sleep(1.0)
        stop.set()
        await task
    assert runs == {m.id: 1 for m in messages}


# --- one consumer process SIGKILLed halfway ---------------------------------------------------------------


@pytest.fixture
def pg_table() -> Iterator[str]:
    """A fresh table name in the test database (its ``_effects`` table too), dropped after the test."""
    name = unique_name("idem").replace("-", "_")
    yield name
    drop = f'DROP TABLE IF EXISTS "{name}"; DROP TABLE IF EXISTS "{name}_effects"'

    async def run() -> None:
        import asyncpg

        with contextlib.suppress(OSError, asyncpg.PostgresError):
            conn = await asyncpg.connect(POSTGRES_DSN)
            await conn.execute(drop)
            await conn.close()

    asyncio.run(run())


@pytest.mark.parametrize("store_kind", ["redis", "postgres"])
@pytest.mark.polybus(timeout=300)
async def test_a_consumer_process_killed_halfway_changes_nothing(
    service_broker: str, service_url: str, scaled: Callable[[int], int], store_kind: str, pg_table: str
) -> None:
    if service_broker == "memory":
        pytest.skip("memory:// lives in one process: there is no other process to kill")
    import asyncpg
    import redis.asyncio

    total = scaled(KILL_ORDERS)
    url = with_options(service_url, **FAST_LEASE.get(service_broker, {}))
    topic, group, name = unique_name("idem"), "billing", pg_table
    store_url = broker_url("redis") if store_kind == "redis" else POSTGRES_DSN
    rclient = redis.asyncio.Redis.from_url(broker_url("redis"))
    pg = await asyncpg.connect(POSTGRES_DSN) if store_kind == "postgres" else None
    if pg is not None:
        await pg.execute(f'CREATE TABLE "{name}_effects" (key text NOT NULL)')
        async with PostgresStore(POSTGRES_DSN, table=name):  # the table, before four processes race
            pass

    async def effects() -> collections.Counter[str]:
        if pg is None:
            found = await rclient.hgetall(f"{name}:effects")
            return collections.Counter({k.decode(): int(v) for k, v in found.items()})
        rows = await pg.fetch(f'SELECT key, count(*) FROM "{name}_effects" GROUP BY key')
        return collections.Counter({r[0]: r[1] for r in rows})

    async def start_worker() -> asyncio.subprocess.Process:
        child = await asyncio.create_subprocess_exec(
            sys.executable, str(WORKER), url, topic, group, store_url, name, "1.5",
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert child.stdout is not None
        line = await asyncio.wait_for(child.stdout.readline(), 60)
        assert line.strip() == b"READY", line
        return child

    workers: list[asyncio.subprocess.Process] = []
    began = time.monotonic()
    try:
        async with polybus.connect(url) as broker, broker.topic(topic).consumer(group):
            pass  # the group exists before the sends
        # the orders go out once all four workers are in: on a busy machine, a worker ready long
        # before the others could otherwise process every order before the kill
        workers = list(await asyncio.gather(*(start_worker() for _ in range(4))))
        async with polybus.connect(url) as broker:
            messages = _orders(total)
            async with broker.topic(topic).producer() as producer:
                for start in range(0, len(messages), 500):
                    await producer.send_many(messages[start : start + 500])

        async def halfway() -> bool:
            return sum((await effects()).values()) >= total // 2

        await _until(halfway, 180, lambda: "half the orders were not processed")
        victim = workers[0]
        victim.send_signal(signal.SIGKILL)
        await victim.wait()
        at_kill = sum((await effects()).values())
        workers[0] = await start_worker()  # restarted

        async def all_done() -> bool:
            return len(await effects()) == total

        await _until(all_done, 240, lambda: f"not every order processed (killed at {at_kill})")
        await asyncio.sleep(2.5)  # past the leases: a copy still held anywhere would have come
        done = await effects()
    finally:
        for worker in workers:
            if worker.returncode is None:
                worker.send_signal(signal.SIGKILL)
            await worker.wait()
        await rclient.delete(f"{name}:effects")
        await rclient.aclose()
        if pg is not None:
            await pg.close()
    assert len(done) == total
    assert set(done.values()) == {1}, collections.Counter(done.values())
    assert 0 < at_kill < total
    print(f"\n[{total} orders, killed at {at_kill}, {time.monotonic() - began:.1f}s]", end=" ")


# --- the middleware's rules, on memory:// ---------------------------------------------------------------


async def test_a_copy_that_finds_the_key_busy_is_nacked_for_the_rest_of_the_lease() -> None:
    topic = unique_name("idem")
    store = MemoryStore()
    release = asyncio.Event()
    runs = 0

    async def slow(delivery: polybus.Delivery) -> None:
        nonlocal runs
        runs += 1
        await release.wait()

    guarded = idempotent(store, lease=1.0)(slow)
    async with polybus.connect("memory://") as broker:
        first_consumer = broker.topic(topic).consumer("g", prefetch=1)
        second_consumer = broker.topic(topic).consumer("g", prefetch=1)
        await first_consumer.open()
        await second_consumer.open()
        message = polybus.Message.of("x")
        async with broker.topic(topic).producer() as producer:
            await producer.send_many([message, message])
        first = await first_consumer.receive(timeout=5)
        second = await second_consumer.receive(timeout=5)
        assert first is not None and second is not None
        running = asyncio.create_task(guarded(first))
        await asyncio.sleep(0.05)
        began = time.monotonic()
        await guarded(second)  # returns at once: nacked, not waiting in the handler slot
        assert time.monotonic() - began < 0.5
        assert second.outcome is polybus.Outcome.NACK and runs == 1
        release.set()
        await running
        await first.ack()
        await first_consumer.aclose()  # the copy comes back to the other consumer
        again = await second_consumer.receive(timeout=5)
        assert again is not None and again.attempt == 2
        assert time.monotonic() - began > 0.7  # it came back after about the lease's remaining second
        await guarded(again)
        assert again.outcome is None and runs == 1  # done: the runner would ack it; not run again
        await again.ack()
        await second_consumer.aclose()


async def test_a_failure_or_a_nack_releases_the_claim() -> None:
    store = MemoryStore()
    outcomes = iter(["raise", "nack", "ok"])
    runs = 0

    async def flaky(delivery: polybus.Delivery) -> None:
        nonlocal runs
        runs += 1
        what = next(outcomes)
        if what == "raise":
            raise ValueError("boom")
        if what == "nack":
            await delivery.nack(0)

    guarded = idempotent(store, lease=60.0)(flaky)
    topic = unique_name("idem")
    async with polybus.connect("memory://") as broker, broker.topic(topic).consumer("g") as consumer:
        async with broker.topic(topic).producer() as producer:
            await producer.send("x")
        delivery = await consumer.receive(timeout=5)
        assert delivery is not None
        with pytest.raises(ValueError, match="boom"):
            await guarded(delivery)
        await delivery.nack(0)
        for _ in range(2):
            delivery = await consumer.receive(timeout=5)
            assert delivery is not None
            await guarded(delivery)
            if delivery.outcome is None:
                await delivery.ack()
        assert runs == 3  # raised, nacked, ran: each retry found the claim released
        key = f"{topic}|g|{delivery.id}"
        assert (await store.claim(key, 1.0)).state is ClaimState.DONE


async def test_groups_do_not_share_keys_and_a_key_of_none_is_not_deduplicated() -> None:
    store = MemoryStore()
    runs: collections.Counter[str] = collections.Counter()

    async def handle(delivery: polybus.Delivery) -> None:
        runs[f"{delivery.group}:{delivery.text()}"] += 1

    guarded = idempotent(store, key=lambda d: d.headers.get("order"))(handle)
    topic = unique_name("idem")
    async with polybus.connect("memory://") as broker:
        billing, email = broker.topic(topic).consumer("billing"), broker.topic(topic).consumer("email")
        await billing.open()
        await email.open()
        async with broker.topic(topic).producer() as producer:
            for body in ["a", "a", "b"]:
                await producer.send(body, headers={"order": body})
            await producer.send("free")
            await producer.send("free")
        for consumer in (billing, email):
            for _ in range(5):
                delivery = await consumer.receive(timeout=5)
                assert delivery is not None
                await guarded(delivery)
                await delivery.ack()
            await consumer.aclose()
    assert runs == {
        "billing:a": 1,
        "billing:b": 1,
        "billing:free": 2,
        "email:a": 1,
        "email:b": 1,
        "email:free": 2,
    }


def test_bad_settings_are_refused() -> None:
    with pytest.raises(polybus.ConfigurationError):
        idempotent(MemoryStore(), ttl=0)
    with pytest.raises(polybus.ConfigurationError):
        idempotent(MemoryStore(), lease=-1)
    with pytest.raises(polybus.ConfigurationError):
        idempotent(object())  # type: ignore[arg-type]
    with pytest.raises(polybus.ConfigurationError):
        PostgresStore(POSTGRES_DSN, table="x; DROP TABLE y")


async def test_a_store_that_fails_after_the_handler_succeeded_does_not_fail_the_delivery() -> None:
    class Forgetful(MemoryStore):
        async def complete(self, claim: Claim, ttl: float) -> bool:
            raise IdempotencyStoreError("the store went away")

    runs = 0

    async def handle(delivery: polybus.Delivery) -> None:
        nonlocal runs
        runs += 1

    topic = unique_name("idem")
    async with polybus.connect("memory://") as broker, broker.topic(topic).consumer("g") as consumer:
        async with broker.topic(topic).producer() as producer:
            await producer.send("x")
        delivery = await consumer.receive(timeout=5)
        assert delivery is not None
        await idempotent(Forgetful())(handle)(delivery)  # logged, not raised: the runner acks it
        assert runs == 1 and delivery.outcome is None


async def test_the_pinned_shape_works_as_written() -> None:
    if not broker_url("redis").startswith("redis://127.0.0.1:6379"):
        pytest.skip("the pinned example names the Redis on 127.0.0.1:6379")
    store = RedisStore("redis://127.0.0.1:6379/0")
    app = polybus.App(middlewares=[idempotent(store, ttl=7 * 24 * 3600)])
    topic, runs = unique_name("idem"), collections.Counter[str]()

    @app.subscribe(topic, group="billing")
    async def bill(order: dict[str, int], delivery: polybus.Delivery) -> None:
        runs[delivery.id] += 1

    async with store, polybus.connect("memory://") as broker:
        stop, task = await _start(app, broker)
        message = polybus.Message.of({"id": 1})
        async with broker.topic(topic).producer() as producer:
            await producer.send_many([message, message, message])

        async def ran() -> bool:
            return bool(runs)

        await _until(ran, 10, lambda: "the handler never ran")
        await asyncio.sleep(0.5)
        stop.set()
        await task
    assert runs == {message.id: 1}
    import redis.asyncio

    async with redis.asyncio.Redis.from_url("redis://127.0.0.1:6379/0") as client:
        assert await client.delete(f"polybus:idem:{topic}|billing|{message.id}") == 1


@pytest.mark.parametrize("store_kind", ["memory", "memory-subclass"])
async def test_a_handler_that_outlives_its_lease_is_taken_over_and_warned_about(
    store_kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Both code paths (the in-place one of MemoryStore, the general one a subclass takes)."""

    class Subclassed(MemoryStore):
        pass

    store = MemoryStore() if store_kind == "memory" else Subclassed()
    runs = 0

    async def slow(delivery: polybus.Delivery) -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            await asyncio.sleep(0.4)  # the 0.1 s lease runs out meanwhile

    guarded = idempotent(store, lease=0.1)(slow)
    topic = unique_name("idem")
    async with polybus.connect("memory://") as broker:
        first_consumer = broker.topic(topic).consumer("g", prefetch=1)
        second_consumer = broker.topic(topic).consumer("g", prefetch=1)
        await first_consumer.open()
        await second_consumer.open()
        message = polybus.Message.of("x")
        async with broker.topic(topic).producer() as producer:
            await producer.send_many([message, message])
        first = await first_consumer.receive(timeout=5)
        second = await second_consumer.receive(timeout=5)
        assert first is not None and second is not None
        running = asyncio.create_task(guarded(first))
        await asyncio.sleep(0.2)
        await guarded(second)  # the lease is over: this copy takes the key over and runs
        assert second.outcome is None and runs == 2
        with caplog.at_level(logging.WARNING, "polybus.patterns"):
            await running
        assert "may have run twice" in caplog.text
        third = await store.claim(f"{topic}|g|{message.id}", 1.0)
        assert third.state is ClaimState.DONE  # the heir's completion stands
        for consumer, delivery in ((first_consumer, first), (second_consumer, second)):
            await delivery.ack()
            await consumer.aclose()
