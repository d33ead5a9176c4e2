"""How the producer places records: sticky batches of unkeyed messages, and many sends at once."""

from __future__ import annotations

import asyncio
import collections

import polybus
from polybus.testing import unique_name
from polybus.testing.contract import collect


def _partition(delivery: polybus.Delivery) -> int:
    tracker, _offset = delivery.native
    return int(tracker.tp.partition)


async def _drain(consumer: polybus.Consumer, count: int, *, ack: bool = True) -> list[polybus.Delivery]:
    got = await collect(consumer, count, 20, ack=ack)
    assert len(got) == count, f"only {len(got)} of {count} arrived"
    return got


async def test_unkeyed_send_many_fills_one_partition_then_moves_on(polybus_url: str) -> None:
    async with polybus.connect(polybus_url, partitions=4) as broker:
        topic = broker.topic(unique_name("sticky"))
        async with topic.consumer(unique_name("g")) as consumer, topic.producer() as producer:
            await producer.send_many([f"a{i}".encode() for i in range(5)])
            await producer.send_many([f"b{i}".encode() for i in range(5)])
            got = await _drain(consumer, 10)
        partitions: dict[bytes, set[int]] = collections.defaultdict(set)
        for d in got:
            partitions[d.body[:1]].add(_partition(d))
        # each call's messages share one record batch, so one partition; the next call takes the next
        assert len(partitions[b"a"]) == 1 and len(partitions[b"b"]) == 1
        assert partitions[b"a"] != partitions[b"b"]
        # within a partition the batch keeps send order
        assert [d.body for d in got if d.body.startswith(b"a")] == [f"a{i}".encode() for i in range(5)]


async def test_a_send_many_larger_than_a_batch_spreads_over_partitions(polybus_url: str) -> None:
    # max_batch_size is the minimum (1 KiB): 40 records of 200 B need several batches
    async with polybus.connect(polybus_url, partitions=4, max_batch_size=1024) as broker:
        topic = broker.topic(unique_name("spread"))
        async with topic.consumer(unique_name("g")) as consumer, topic.producer() as producer:
            await producer.send_many([b"%03d" % i + b"." * 197 for i in range(40)])
            got = await _drain(consumer, 40)
        assert sorted(d.body[:3] for d in got) == [b"%03d" % i for i in range(40)]
        assert len({_partition(d) for d in got}) == 4


async def test_many_concurrent_send_many_to_one_partition_are_all_confirmed(polybus_url: str) -> None:
    # aiokafka's send_batch waits for a free slot of the partition with a timeout that shrinks on
    # every wake-up, so dozens of concurrent senders of one partition timed out (KafkaTimeoutError)
    # well before request_timeout_ms; the adapter queues its batches per partition, first come first served
    async with polybus.connect(polybus_url, partitions=1, request_timeout_ms=2000) as broker:
        topic = broker.topic(unique_name("crowd"))
        async with topic.producer() as producer:
            calls = [producer.send_many([b"%d-%d" % (c, i) for i in range(1500)]) for c in range(40)]
            ids = await asyncio.gather(*calls)
        assert sum(len(batch) for batch in ids) == 60_000
        assert (await topic.stats()).messages == 60_000
        await topic.delete()


async def test_a_listener_settles_what_it_received(polybus_url: str) -> None:
    # a listener commits nothing, but must not keep every offset it ever read (memory would grow)
    async with polybus.connect(polybus_url, partitions=1) as broker:
        topic = broker.topic(unique_name("listen"))
        async with topic.consumer() as listener, topic.producer() as producer:
            await producer.send_many([b"ack", b"reject", b"nack"])
            first = await _drain(listener, 3, ack=False)
            for d in first:
                await {b"ack": d.ack, b"reject": d.reject, b"nack": d.nack}[d.body]()
            again = await listener.receive(timeout=10)
            assert again is not None and again.body == b"nack" and again.attempt == 2
            await again.ack()
            await asyncio.sleep(0.05)  # the core queues acks and records them on the next loop turns
            trackers = listener._trackers.values()  # type: ignore[attr-defined]
            assert [t.busy for t in trackers] == [False]
