"""Interop with the raw aiokafka client, both ways, and the documented wire format."""

from __future__ import annotations

import asyncio
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from polybus_kafka import KafkaBroker

import polybus
from polybus.testing import unique_name


def _servers(broker: polybus.Broker) -> list[str]:
    assert isinstance(broker, KafkaBroker)
    return broker.settings.bootstrap_servers


async def test_polybus_message_is_read_by_a_plain_aiokafka_consumer(polybus_url: str) -> None:
    async with polybus.connect(polybus_url, partitions=1) as broker:
        topic = broker.topic(unique_name("out"))
        async with topic.producer() as producer:
            sent_id = await producer.send({"n": 1}, key="k-1", headers={"trace": "t-9"})
        raw = AIOKafkaConsumer(bootstrap_servers=_servers(broker), auto_offset_reset="earliest")
        await raw.start()
        try:
            raw.assign([TopicPartition(topic.name, 0)])
            await raw.seek_to_beginning()
            record = await asyncio.wait_for(raw.getone(), 20)
        finally:
            await raw.stop()
    assert record.value == b'{"n":1}'
    assert record.key == b"k-1"
    headers = dict(record.headers)
    assert headers == {"content-type": b"application/json", "trace": b"t-9", "polybus-id": sent_id.encode()}


async def test_send_many_of_bytes_writes_the_same_records_as_messages(polybus_url: str) -> None:
    # a list of bytes takes the fast path (no Message per body); a mixed list the general one
    async with polybus.connect(polybus_url, partitions=1) as broker:
        topic = broker.topic(unique_name("bulk"))
        before = time.time()
        async with topic.producer() as producer:
            fast_ids = await producer.send_many([b"f0", b"f1", b"f2"])
            general_ids = await producer.send_many([b"g0", polybus.Message.of(b"g1")])
        after = time.time()
        raw = AIOKafkaConsumer(bootstrap_servers=_servers(broker), auto_offset_reset="earliest")
        await raw.start()
        try:
            raw.assign([TopicPartition(topic.name, 0)])
            await raw.seek_to_beginning()
            records = []
            while len(records) < 5:
                records.append(await asyncio.wait_for(raw.getone(), 20))
        finally:
            await raw.stop()
    assert [r.value for r in records] == [b"f0", b"f1", b"f2", b"g0", b"g1"]
    ids = [*fast_ids, *general_ids]
    assert len(set(ids)) == 5
    for record, sent_id in zip(records, ids, strict=True):
        # bytes need no content-type on the wire: polybus-id without one means bytes
        assert list(record.headers) == [("polybus-id", sent_id.encode())]
        assert record.key is None
        assert before - 1 <= record.timestamp / 1000 <= after + 1


async def test_bytes_with_headers_travel_without_content_type_and_come_back_as_bytes(
    polybus_url: str,
) -> None:
    async with polybus.connect(polybus_url, partitions=1) as broker:
        topic = broker.topic(unique_name("ct"))
        async with topic.consumer(unique_name("g")) as consumer, topic.producer() as producer:
            await producer.send(b"\x00raw", headers={"trace": "t-1"})
            await producer.send("text")
            got = [await consumer.receive(timeout=20) for _ in range(2)]
            for d in got:
                assert d is not None
                await (d.nack() if d.body == b"\x00raw" else d.ack())
            again = await consumer.receive(timeout=20)  # the retry copy keeps the content type
            assert again is not None and again.body == b"\x00raw" and again.attempt == 2
            await again.ack()
        raw = AIOKafkaConsumer(bootstrap_servers=_servers(broker), auto_offset_reset="earliest")
        await raw.start()
        try:
            raw.assign([TopicPartition(topic.name, 0)])
            await raw.seek_to_beginning()
            records = [await asyncio.wait_for(raw.getone(), 20) for _ in range(2)]
        finally:
            await raw.stop()
    assert [name for name, _ in records[0].headers] == ["trace", "polybus-id"]
    assert [name for name, _ in records[1].headers] == ["content-type", "polybus-id"]
    first, second = got
    assert first is not None and second is not None
    assert first.headers == {"trace": "t-1", "content-type": "application/octet-stream"}
    assert again.headers == first.headers and again.id == first.id
    assert second.content_type == "text/plain; charset=utf-8" and second.text() == "text"


async def test_plain_aiokafka_message_is_consumed_by_polybus(polybus_url: str) -> None:
    async with polybus.connect(polybus_url) as broker:
        topic = broker.topic(unique_name("in"))
        async with topic.consumer(unique_name("g")) as consumer:
            raw = AIOKafkaProducer(bootstrap_servers=_servers(broker), acks="all")
            await raw.start()
            try:
                meta = await raw.send_and_wait(
                    topic.name, b"raw body", key=b"order-1", headers=[("source", b"legacy"), ("bin", b"\xff")]
                )
            finally:
                await raw.stop()
            d = await consumer.receive(timeout=20)
            assert d is not None
            await d.nack()  # the id stays stable across redeliveries, the attempt counts
            again = await consumer.receive(timeout=20)
            assert again is not None
            await again.ack()
    assert d.body == b"raw body" and d.key == "order-1" and d.attempt == 1
    assert d.headers == {"source": "legacy", "bin": "\\xff"}
    assert d.content_type is None
    assert d.id == f"{topic.name}-{meta.partition}-{meta.offset}"
    assert (again.id, again.attempt, again.body, again.headers) == (d.id, 2, d.body, d.headers)
