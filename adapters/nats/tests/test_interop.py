"""Interop with plain nats-py JetStream clients, both ways, on the documented wire format."""

from __future__ import annotations

import nats
import pytest
from nats.js import api
from polybus_nats import NatsBroker

import polybus
from polybus.testing import unique_name


@pytest.mark.polybus(timeout=60)
async def test_message_sent_by_polybus_is_read_by_a_raw_jetstream_consumer(polybus_url: str) -> None:
    async with polybus.connect(polybus_url) as broker:
        assert isinstance(broker, NatsBroker)
        topic = broker.topic(unique_name("out"))
        await topic.ensure()
        raw = await nats.connect(broker.settings.servers)
        try:
            js = raw.jetstream()
            sub = await js.pull_subscribe(topic.name, durable="raw", stream=topic.name)
            async with topic.producer() as producer:
                headers = {"trace": "t-1", "X-Case": "Kept"}
                sent = await producer.send(b"\x00binary\xff", key="k-1", headers=headers)
                await producer.send({"n": 1})
            first, second = await sub.fetch(2, timeout=10)
            assert first.data == b"\x00binary\xff"
            assert first.headers == {
                "content-type": "application/octet-stream",
                "trace": "t-1",
                "X-Case": "Kept",
                "Nats-Msg-Id": sent,
                "polybus-key": "k-1",
            }
            assert second.data == b'{"n":1}' and second.headers is not None
            assert second.headers["content-type"] == "application/json"
            assert "polybus-key" not in second.headers
            assert first.metadata.num_delivered == 1
            await first.ack()
            await second.ack()
        finally:
            await raw.close()
            await topic.delete()


@pytest.mark.polybus(timeout=60)
async def test_message_sent_by_a_raw_jetstream_producer_is_consumed_by_polybus(polybus_url: str) -> None:
    async with polybus.connect(polybus_url) as broker:
        assert isinstance(broker, NatsBroker)
        name = unique_name("in")
        raw = await nats.connect(broker.settings.servers)
        try:
            js = raw.jetstream()
            # the stream may come from anyone: here the raw client creates it
            await js.add_stream(api.StreamConfig(name=name, subjects=[name]))
            topic = broker.topic(name)
            async with topic.consumer(unique_name("g")) as consumer:
                ack = await js.publish(name, b"plain", headers={"trace": "t-2", "Nats-Msg-Id": "order-42"})
                await js.publish(name, b"no headers at all")
                got = await consumer.receive(timeout=10)
                bare = await consumer.receive(timeout=10)
                assert got is not None and bare is not None
                await got.ack()
                await bare.ack()
            assert got.body == b"plain" and got.attempt == 1
            assert got.headers == {"trace": "t-2"} and got.key is None and got.id == "order-42"
            assert got.content_type is None and got.text() == "plain"
            assert abs(got.timestamp - bare.timestamp) < 60
            assert bare.body == b"no headers at all" and bare.headers == {} and bare.attempt == 1
            assert bare.id == f"{name}:{ack.seq + 1}"
        finally:
            await raw.close()
            await broker.topic(name).delete()
