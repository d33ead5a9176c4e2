"""Interop with the raw client: polybus <-> plain aio-pika, both ways, on the documented wire format."""

from __future__ import annotations

import datetime

import aio_pika
import pytest

import polybus
from polybus.testing import unique_name

pytestmark = pytest.mark.polybus(timeout=60)


async def test_message_sent_by_polybus_reads_intact_with_plain_aio_pika(polybus_url: str) -> None:
    async with polybus.connect(polybus_url) as broker:
        topic = broker.topic(unique_name("out"))
        await topic.ensure()
        raw = await aio_pika.connect(polybus_url)
        try:
            channel = await raw.channel()
            queue = await channel.declare_queue(exclusive=True)
            await queue.bind(topic.name)
            async with topic.producer() as producer:
                sent_id = await producer.send({"total": 12.5}, key="cust-1", headers={"trace": "t-1"})
            message = await queue.get(timeout=10)
            await message.ack()
        finally:
            await raw.close()
    assert message.body == b'{"total":12.5}'
    assert message.content_type == "application/json"
    assert message.message_id == sent_id
    assert message.headers["trace"] == "t-1"
    assert message.headers["polybus-key"] == "cust-1"
    assert message.routing_key == "cust-1"
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert isinstance(message.timestamp, datetime.datetime)
    assert abs(message.timestamp.timestamp() - int(message.headers["polybus-ts"]) / 1000) < 1


async def test_message_sent_by_plain_aio_pika_is_consumed_by_polybus(polybus_url: str) -> None:
    async with polybus.connect(polybus_url) as broker:
        topic = broker.topic(unique_name("in"))
        async with topic.consumer(unique_name("g")) as consumer:
            raw = await aio_pika.connect(polybus_url)
            try:
                channel = await raw.channel()
                exchange = await channel.get_exchange(topic.name)
                await exchange.publish(
                    aio_pika.Message(
                        b"plain",
                        content_type="text/plain",
                        headers={"origin": "legacy", "count": 3, "flag": True, "nested": {"a": 1}},
                        timestamp=datetime.datetime(2024, 5, 1, tzinfo=datetime.UTC),
                    ),
                    routing_key="",
                )
            finally:
                await raw.close()
            first = await consumer.receive(timeout=10)
            assert first is not None
            await first.nack()  # the id a foreign message gets must survive a redelivery
            second = await consumer.receive(timeout=10)
            assert second is not None
            await second.ack()
    assert first.body == b"plain" and first.attempt == 1
    assert first.headers == {"origin": "legacy", "count": "3", "flag": "True", "content-type": "text/plain"}
    assert first.key is None
    assert first.timestamp == datetime.datetime(2024, 5, 1, tzinfo=datetime.UTC).timestamp()
    assert second.id == first.id and second.attempt == 2
    assert second.headers == first.headers


async def test_message_id_of_a_plain_producer_is_kept(polybus_url: str) -> None:
    async with polybus.connect(polybus_url) as broker:
        topic = broker.topic(unique_name("in-id"))
        async with topic.consumer(unique_name("g")) as consumer:
            raw = await aio_pika.connect(polybus_url)
            try:
                channel = await raw.channel()
                exchange = await channel.get_exchange(topic.name)
                await exchange.publish(aio_pika.Message(b"{}", message_id="order-17"), routing_key="")
            finally:
                await raw.close()
            got = await consumer.receive(timeout=10)
            assert got is not None
            await got.ack()
    assert got.id == "order-17" and got.json() == {} and got.content_type is None
