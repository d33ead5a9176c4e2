"""Topic administration: a deleted topic stays deleted while the same broker keeps working."""

from __future__ import annotations

import asyncio

import polybus
from polybus.testing import unique_name


async def test_a_deleted_topic_stays_deleted_while_the_broker_works_on(polybus_url: str) -> None:
    # the clients' metadata still listed the deleted topic, and a metadata request may create it
    async with polybus.connect(polybus_url, partitions=1) as broker:
        doomed = broker.topic(unique_name("doomed"))
        group = unique_name("g")
        async with doomed.consumer(group), doomed.producer() as producer:
            await producer.send(b"x")
        await doomed.delete()
        other = broker.topic(unique_name("other"))
        async with other.consumer(unique_name("g")) as consumer, other.producer() as producer:
            await producer.send(b"y")
            d = await consumer.receive(timeout=20)
            assert d is not None
            await d.ack()
        await asyncio.sleep(1.0)  # a metadata refresh or two
        with_retry = {doomed.name, f"{doomed.name}.{group}.retry"}
        async with polybus.connect(polybus_url) as fresh:
            names = set(await fresh.topic_names())  # type: ignore[attr-defined]
        assert not with_retry & names


async def test_a_topic_deleted_elsewhere_is_not_re_created_by_a_process_that_sent_to_it(
    polybus_url: str,
) -> None:
    # aiokafka's producer named every topic it ever sent to in each metadata refresh; now only those
    # that an open producer (or a group member's retry copies) sends to
    async with polybus.connect(polybus_url, partitions=1) as broker, polybus.connect(polybus_url) as other:
        doomed = broker.topic(unique_name("gone"))
        group = unique_name("g")
        async with doomed.consumer(group) as consumer, doomed.producer() as producer:
            await producer.send(b"x")
            d = await consumer.receive(timeout=20)
            assert d is not None
            await d.nack()  # a retry copy: the retry topic was sent to as well
        await other.topic(doomed.name).delete()
        alive = broker.topic(unique_name("alive"))
        async with alive.producer() as producer:
            await producer.send(b"y")  # a new topic: the producer refreshes its metadata
        await asyncio.sleep(1.0)
        names = set(await other.topic_names())  # type: ignore[attr-defined]
    assert not {doomed.name, f"{doomed.name}.{group}.retry"} & names
