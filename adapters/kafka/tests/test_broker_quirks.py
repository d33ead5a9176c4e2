"""Behaviour that tansu gets wrong (or got wrong once) and the adapter works around.

Each test states what Apache Kafka does; it passes there without the workaround, and fails on
tansu if the workaround is removed. See docs/kafka.md, "Known differences".
"""

from __future__ import annotations

import asyncio
import time

from aiokafka import TopicPartition
from polybus_kafka import KafkaBroker

import polybus
from polybus.testing import unique_name


async def test_end_offsets_count_every_record_of_a_multi_record_batch(polybus_url: str) -> None:
    # tansu answers ListOffsets(latest) with last batch's base offset + 1 (here 1, not 10)
    async with polybus.connect(polybus_url, partitions=1) as broker:
        assert isinstance(broker, KafkaBroker)
        topic = broker.topic(unique_name("ends"))
        async with topic.producer() as producer:
            await producer.send_many([str(i) for i in range(10)])  # one record batch
        tp = TopicPartition(topic.name, 0)
        assert await broker.end_offsets([tp]) == {tp: 10}
        # so a new group and a listener start after all ten, not inside the batch
        async with topic.consumer() as listener, topic.consumer(unique_name("g")) as group:
            async with topic.producer() as producer:
                await producer.send(b"new")
            for consumer in (listener, group):
                d = await consumer.receive(timeout=20)
                assert d is not None and d.body == b"new"
                await d.ack()
                assert await consumer.receive(timeout=1.0) is None


async def test_backlog_in_stats_matches_what_a_consumer_reads(polybus_url: str) -> None:
    async with polybus.connect(polybus_url, partitions=2) as broker:
        topic = broker.topic(unique_name("backlog"))
        group = unique_name("g")
        async with topic.consumer(group):
            pass
        async with topic.producer() as producer:
            for start in range(0, 21, 7):
                await producer.send_many([str(i) for i in range(start, start + 7)])
        stats = await topic.stats()
        assert stats.groups[group].backlog == 21 and stats.messages == 21
        read = 0
        async with topic.consumer(group) as consumer:
            while (d := await consumer.receive(timeout=3.0)) is not None:
                read += 1
                await d.ack()
        assert read == 21
        assert (await topic.stats()).groups[group].backlog == 0


async def test_a_waiting_consumer_gets_a_new_message_promptly(polybus_url: str) -> None:
    # tansu answers an empty fetch only after about half of fetch_max_wait_ms, whatever arrives
    async with polybus.connect(polybus_url) as broker:
        topic = broker.topic(unique_name("latency"))
        async with topic.consumer(unique_name("g")) as consumer, topic.producer() as producer:
            worst = 0.0
            for _ in range(5):
                waiting = asyncio.create_task(consumer.receive(timeout=10))
                await asyncio.sleep(0.3)
                sent = time.monotonic()
                await producer.send(b"ping")
                d = await waiting
                assert d is not None
                worst = max(worst, time.monotonic() - sent)
                await d.ack()
    assert worst < 2.0, f"a waiting consumer took {worst:.2f}s to see a message"


async def test_a_recreated_topic_does_not_inherit_the_old_group_offsets(polybus_url: str) -> None:
    # committed offsets of a deleted topic must not apply to a new topic of the same name
    async with polybus.connect(polybus_url, partitions=1) as broker:
        topic = broker.topic(unique_name("reborn"))
        group = unique_name("g")
        async with topic.consumer(group) as consumer, topic.producer() as producer:
            await producer.send_many([str(i) for i in range(5)])
            for _ in range(5):
                d = await consumer.receive(timeout=20)
                assert d is not None
                await d.ack()
        await topic.delete()
        await topic.ensure()
        async with topic.consumer(group) as consumer, topic.producer() as producer:
            await producer.send(b"first of the new topic")
            d = await consumer.receive(timeout=20)
            assert d is not None and d.body == b"first of the new topic"
            await d.ack()


async def test_a_group_whose_leader_left_during_a_rebalance_still_forms(polybus_url: str) -> None:
    # tansu keeps naming a leader that left while a rebalance was under way, so every later join
    # waits for it forever; Kafka elects a new leader. `first` leads (it was alone); `second`
    # leaving starts a rebalance, and `first` leaves before it completes.
    async with polybus.connect(polybus_url, partitions=2, join_timeout=40) as broker:
        topic = broker.topic(unique_name("ghost"))
        group = unique_name("g")
        first = topic.consumer(group)
        await first.open()
        second = topic.consumer(group)
        await second.open()
        await second.aclose()
        await first.aclose()
        started = time.monotonic()
        async with topic.consumer(group) as third, topic.producer() as producer:
            await producer.send(b"after")
            d = await third.receive(timeout=20)
            assert d is not None and d.body == b"after"
            await d.ack()
        assert time.monotonic() - started < 35
