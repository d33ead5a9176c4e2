"""Redis-specific semantics: delayed nacks, restarts under the same name, trimming, stats, memory.

Reclaiming from a killed consumer and keeping a slow handler's lease are contract cases.
"""

from __future__ import annotations

import os
import time

import redis.asyncio as raw_redis

import polybus
from polybus.testing import unique_name


async def _collect(consumer: polybus.Consumer, n: int, timeout: float) -> list[polybus.Delivery]:
    got: list[polybus.Delivery] = []
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        d = await consumer.receive(timeout=min(1.0, max(0.01, deadline - time.monotonic())))
        if d is not None:
            got.append(d)
            await d.ack()
    return got


async def test_nack_with_delay_does_not_hold_up_a_thousand_others(polybus_url: str) -> None:
    async with polybus.connect(polybus_url) as broker:
        topic = broker.topic(unique_name("delay1k"))
        async with topic.consumer(unique_name("g")) as consumer, topic.producer() as producer:
            await producer.send(b"slow")
            first = await consumer.receive(timeout=10)
            assert first is not None
            await first.nack(delay=1.0)
            nacked_at = time.monotonic()
            await producer.send_many([str(i).encode() for i in range(1000)])
            got = await _collect(consumer, 1001, 15)
            fast_done = next(i for i, d in enumerate(got) if d.body == b"slow")
    others = [d.body for d in got if d.body != b"slow"]
    assert sorted(others) == sorted(str(i).encode() for i in range(1000))
    assert fast_done == 1000, f"the delayed entry came back after only {fast_done} others"
    again = got[-1]
    assert again.body == b"slow" and again.attempt == 2 and again.id == first.id
    assert time.monotonic() - nacked_at >= 0.9


async def test_nack_delay_longer_than_visibility_timeout_is_honoured(polybus_url: str) -> None:
    async with polybus.connect(polybus_url, visibility_timeout=1.0, claim_interval=0.2) as broker:
        topic = broker.topic(unique_name("longdelay"))
        async with topic.consumer(unique_name("g")) as consumer, topic.producer() as producer:
            await producer.send(b"later")
            first = await consumer.receive(timeout=10)
            assert first is not None
            await first.nack(delay=3.0)
            nacked_at = time.monotonic()
            assert await consumer.receive(timeout=2.5) is None
            again = await consumer.receive(timeout=5)
            waited = time.monotonic() - nacked_at
            assert again is not None
            await again.ack()
    assert again.id == first.id and again.attempt == 2
    assert 2.8 <= waited <= 6, waited


async def test_restart_under_the_same_name_reads_own_pending_first(polybus_url: str) -> None:
    group = unique_name("g")
    async with polybus.connect(polybus_url) as broker:
        topic = broker.topic(unique_name("restart"))
        async with topic.consumer(group):
            pass
        async with topic.producer() as producer:
            await producer.send_many([b"a", b"b", b"c"])
        # a consumer that "dies" holding a and b: its entries stay in its pending list
        async with raw_redis.Redis.from_url(polybus_url) as client:
            await client.xreadgroup(group, "worker-1", {topic.key: ">"}, count=2)
        async with topic.consumer(group, name="worker-1") as restarted:
            got = await _collect(restarted, 3, 10)
    assert [d.body for d in got] == [b"a", b"b", b"c"]
    assert [d.attempt for d in got] == [2, 2, 1]


async def test_trimming_keeps_what_a_group_has_not_acked(polybus_url: str) -> None:
    async with polybus.connect(polybus_url, max_len=10) as broker:
        topic = broker.topic(unique_name("trim"))
        group, lagging = unique_name("g"), unique_name("lagging")
        async with topic.consumer(group, prefetch=5) as consumer, topic.producer() as producer:
            async with topic.consumer(lagging):
                pass
            await producer.send_many([f"{i}".encode() for i in range(300)])
            assert len(await _collect(consumer, 100, 10)) == 100
            held = [await consumer.receive(timeout=5) for _ in range(5)]  # entries 100-104, unacked
            for i in range(300, 600):
                await producer.send(f"{i}".encode())
            # the lagging group has read nothing yet: every entry is still there
            assert (await topic.stats()).messages == 600
            async with topic.consumer(lagging, prefetch=600) as late:
                assert len(await _collect(late, 600, 20)) == 600
            for i in range(600, 900):
                await producer.send(f"{i}".encode())
            stats = await topic.stats()
            # trimmed, but never past entry 100, which the first group still holds
            assert stats.messages is not None and 800 <= stats.messages < 900, stats
            async with raw_redis.Redis.from_url(polybus_url) as client:
                ((_first_id, first_fields),) = await client.xrange(topic.key, count=1)
            assert int(first_fields[b"body"]) <= 100
            for d in held:
                assert d is not None
                await d.nack()
            again = await _collect(consumer, 5, 10)
    assert sorted(d.body for d in again) == [f"{i}".encode() for i in range(100, 105)]


async def test_stats_count_held_and_nacked_entries(polybus_url: str) -> None:
    async with polybus.connect(polybus_url) as broker:
        topic = broker.topic(unique_name("stats"))
        group = unique_name("g")
        async with topic.consumer(group, prefetch=3) as consumer, topic.producer() as producer:
            await producer.send_many([b"1", b"2", b"3", b"4"])
            held = [await consumer.receive(timeout=5) for _ in range(3)]
            stats = (await topic.stats()).groups[group]
            assert (stats.backlog, stats.in_flight) == (1, 3)
            assert held[0] is not None
            await held[0].nack(delay=30)
            stats = (await topic.stats()).groups[group]
            assert (stats.backlog, stats.in_flight) == (2, 2)


async def test_process_memory_stays_bounded_while_draining_a_backlog(polybus_url: str) -> None:
    import psutil

    n = int(os.environ.get("POLYBUS_REDIS_BACKLOG", "50000"))
    async with polybus.connect(polybus_url) as broker:
        topic = broker.topic(unique_name("drain"))
        group = unique_name("g")
        async with topic.consumer(group):
            pass
        async with topic.producer() as producer:
            for start in range(0, n, 5000):
                await producer.send_many([b"x" * 100] * min(5000, n - start))
        process = psutil.Process()
        peak = 0
        count = 0
        async with topic.consumer(group) as consumer:
            async for d in consumer:
                await d.ack()
                count += 1
                if count % 5000 == 0:
                    peak = max(peak, process.memory_info().rss)
                if count == n:
                    break
        await topic.delete()
    assert peak < 300 * 1024 * 1024, f"peak RSS {peak / 2**20:.0f} MiB"
