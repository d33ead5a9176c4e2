"""Interop with the raw aiokafka client, both ways, and the documented wire format."""

from __future__ import annotations

import asyncio

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
