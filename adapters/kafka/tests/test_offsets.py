"""Kafka-specific: commits only cover contiguous acked offsets, and members joining lose nothing."""

from __future__ import annotations

import asyncio
import random

from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from polybus_kafka import KafkaBroker
from polybus_kafka._wire import group_id

import polybus
from polybus.testing import unique_name


def _servers(broker: polybus.Broker) -> list[str]:
    assert isinstance(broker, KafkaBroker)
    return broker.settings.bootstrap_servers


async def _committed(admin: AIOKafkaAdminClient, gid: str, tp: TopicPartition) -> int:
    offsets = await admin.list_consumer_group_offsets(gid, partitions=[tp])
    meta = offsets.get(tp)
    return -1 if meta is None else meta.offset


async def test_out_of_order_acks_never_commit_past_an_unacked_offset(polybus_url: str) -> None:
    n, held_index = 200, 50
    async with polybus.connect(polybus_url, partitions=1, commit_interval=0.01) as broker:
        topic = broker.topic(unique_name("ooo"))
        group = unique_name("g")
        tp = TopicPartition(topic.name, 0)
        admin = AIOKafkaAdminClient(bootstrap_servers=_servers(broker))
        await admin.start()
        try:
            async with topic.consumer(group, prefetch=16) as consumer, topic.producer() as producer:
                await producer.send_many([str(i) for i in range(n)])
                acked: set[int] = set()
                held: list[polybus.Delivery] = []
                highest_commit = -1
                done = asyncio.Event()

                async def handler() -> None:
                    while not done.is_set():
                        d = await consumer.receive(timeout=0.2)
                        if d is None:
                            continue
                        i = int(d.text())
                        if i == held_index:
                            held.append(d)  # never acked: every commit must stay at or below it
                            continue
                        await asyncio.sleep(random.random() * 0.01)  # finish out of order
                        await d.ack()
                        acked.add(i)
                        if len(acked) >= n - 1:
                            done.set()

                async def watch() -> None:
                    nonlocal highest_commit
                    while not done.is_set():
                        now = await _committed(admin, group_id(topic.name, group), tp)
                        highest_commit = max(highest_commit, now)
                        await asyncio.sleep(0.05)

                handlers = [asyncio.create_task(handler()) for _ in range(8)]
                watcher = asyncio.create_task(watch())
                await asyncio.wait_for(done.wait(), 60)
                await asyncio.gather(*handlers, watcher)
                assert len(held) == 1
                # all but one acked, in any order: the commit point is exactly the held offset
                assert highest_commit <= held_index
            # closed ("killed") with one delivery unsettled: restart and see what comes back
            assert await _committed(admin, group_id(topic.name, group), tp) == held_index
            async with topic.consumer(group) as restarted:
                first = await restarted.receive(timeout=20)
                assert first is not None and first.text() == str(held_index)
                back = [first]
                while (d := await restarted.receive(timeout=1.0)) is not None:
                    back.append(d)
                    await d.ack()
        finally:
            await admin.close()
    returned = sorted(int(d.text()) for d in back)
    # the held one and those acked after it come back (duplicates); nothing before it does
    assert returned == list(range(held_index, n))


async def test_a_member_joining_mid_stream_loses_nothing(polybus_url: str) -> None:
    total, prefetch = 2000, 50
    async with polybus.connect(polybus_url, partitions=4) as broker:
        topic = broker.topic(unique_name("join"))
        group = unique_name("g")
        seen: list[str] = []
        stop = asyncio.Event()
        quarter, complete = asyncio.Event(), asyncio.Event()

        async def work(consumer: polybus.Consumer) -> None:
            while not stop.is_set():
                d = await consumer.receive(timeout=0.2)
                if d is not None:
                    seen.append(d.text())
                    await asyncio.sleep(0.001)
                    await d.ack()
                    if len(seen) >= total // 4:
                        quarter.set()
                    if len(set(seen)) >= total:
                        complete.set()

        async def produce() -> None:
            async with topic.producer() as producer:
                for start in range(0, total, 20):
                    await producer.send_many([str(i) for i in range(start, start + 20)])
                    await asyncio.sleep(0.02)

        first = topic.consumer(group, prefetch=prefetch)
        await first.open()
        workers = [asyncio.create_task(work(first))]
        producing = asyncio.create_task(produce())
        await asyncio.wait_for(quarter.wait(), 60)
        second = topic.consumer(group, prefetch=prefetch)
        await second.open()  # joins while messages flow and the first member holds work
        workers.append(asyncio.create_task(work(second)))
        await producing
        try:
            await asyncio.wait_for(complete.wait(), 60)
        except TimeoutError:
            pass  # the assertions below say what is missing
        stop.set()
        await asyncio.gather(*workers)
        stats_second = second.in_flight
        await first.aclose()
        await second.aclose()
    missing = {str(i) for i in range(total)} - set(seen)
    assert not missing, f"{len(missing)} lost, e.g. {sorted(missing)[:5]}"
    duplicates = len(seen) - len(set(seen))
    assert duplicates <= 2 * prefetch, f"{duplicates} duplicates, more than the work in flight"
    assert stats_second == 0
