"""Interop with plain redis-py (asyncio): the wire format of docs/redis.md, both directions."""

from __future__ import annotations

import redis.asyncio as raw_redis

import polybus
from polybus.testing import unique_name


async def test_message_sent_by_polybus_is_read_by_plain_redis_py(polybus_url: str) -> None:
    async with polybus.connect(polybus_url) as broker:
        topic = broker.topic(unique_name("to-raw"))
        async with raw_redis.Redis.from_url(polybus_url) as client:
            await client.xgroup_create(topic.key, "raw", id="$", mkstream=True)
            async with topic.producer() as producer:
                sent_id = await producer.send(
                    b"\x00binary\xff", key="k-1", headers={"trace": "t-9", "body": "a header named body"}
                )
            reply = await client.xreadgroup("raw", "c", {topic.key: ">"}, count=10, block=5000)
            ((_, [(entry_id, fields)]),) = reply
            await client.xack(topic.key, "raw", entry_id)
    assert fields[b"body"] == b"\x00binary\xff"
    assert fields[b"polybus-id"] == sent_id.encode()
    assert fields[b"key"] == b"k-1"
    assert fields[b"content-type"] == b"application/octet-stream"
    assert fields[b"trace"] == b"t-9"
    assert fields[b"h:body"] == b"a header named body"
    assert set(fields) == {b"body", b"polybus-id", b"key", b"content-type", b"trace", b"h:body"}


async def test_message_sent_by_plain_redis_py_is_consumed_by_polybus(polybus_url: str) -> None:
    async with polybus.connect(polybus_url) as broker:
        topic = broker.topic(unique_name("from-raw"))
        async with topic.consumer(unique_name("g")) as consumer:
            async with raw_redis.Redis.from_url(polybus_url) as client:
                entry_id = await client.xadd(
                    topic.key,
                    {"body": '{"order": 7}', "content-type": "application/json", "tenant": "acme"},
                )
                bare_id = await client.xadd(topic.key, {"note": "no body field"})
            got = await consumer.receive(timeout=10)
            bare = await consumer.receive(timeout=10)
            assert got is not None and bare is not None
            await got.ack()
            await bare.ack()
    assert got.attempt == 1
    assert got.json() == {"order": 7}
    assert got.headers == {"content-type": "application/json", "tenant": "acme"}
    assert got.id == entry_id.decode() and got.key is None
    assert abs(got.timestamp * 1000 - int(entry_id.split(b"-")[0])) < 1
    assert bare.body == b"" and bare.headers == {"note": "no body field"} and bare.id == bare_id.decode()


async def test_headers_round_trip_through_the_escaping(polybus_url: str) -> None:
    headers = {"body": "1", "key": "2", "polybus-id": "3", "h:x": "4", "plain": "5", "ünï": "ç"}
    async with polybus.connect(polybus_url) as broker:
        topic = broker.topic(unique_name("escape"))
        async with topic.consumer(unique_name("g")) as consumer, topic.producer() as producer:
            sent_id = await producer.send(b"x", headers=headers)
            got = await consumer.receive(timeout=10)
            assert got is not None
            await got.ack()
    assert got.id == sent_id
    assert {k: v for k, v in got.headers.items() if k != "content-type"} == headers
