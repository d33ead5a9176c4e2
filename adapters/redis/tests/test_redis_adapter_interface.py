"""The redis adapter on ``polybus.adapter``: ``start=`` and ``name=`` beyond the contract suite, closing,
and closing (the import rules are tests/test_adapter_boundary.py's)."""

from __future__ import annotations

import asyncio

import pytest
from polybus_redis import RedisConsumer

import polybus
from polybus.testing import unique_name


async def _bodies(consumer: polybus.Consumer, n: int) -> list[bytes]:
    got = []
    for _ in range(n):
        d = await consumer.receive(timeout=5)
        assert d is not None
        await d.ack()
        got.append(d.body)
    return got


async def test_start_applies_only_when_the_group_is_created(polybus_url: str) -> None:
    async with polybus.connect(polybus_url) as broker:
        topic = broker.topic(unique_name("existing"))
        group = unique_name("g")
        async with topic.producer() as producer:
            await producer.send(b"before the group")
            async with topic.consumer(group):  # creates the group at "$"
                pass
            await producer.send(b"after the group")
            async with topic.consumer(group, start="earliest") as consumer:
                assert await _bodies(consumer, 1) == [b"after the group"]
                assert await consumer.receive(timeout=0.2) is None
        await topic.delete()


async def test_a_listener_with_start_earliest_reads_the_whole_stream(polybus_url: str) -> None:
    async with polybus.connect(polybus_url) as broker:
        topic = broker.topic(unique_name("listen-earliest"))
        async with topic.producer() as producer:
            await producer.send_many([b"a", b"b"])
            async with topic.consumer(start="earliest") as everything, topic.consumer() as fresh:
                await producer.send(b"c")
                assert await _bodies(everything, 3) == [b"a", b"b", b"c"]
                assert await _bodies(fresh, 1) == [b"c"]
        await topic.delete()


async def test_the_consumer_name_option(polybus_url: str) -> None:
    async with polybus.connect(polybus_url) as broker:
        assert broker.capabilities.replay is polybus.Support.NATIVE
        topic = broker.topic(unique_name("options"))
        with pytest.raises(polybus.ConfigurationError, match="consumer option 'name'"):
            topic.consumer("g", name="")
        with pytest.raises(polybus.ConfigurationError, match="reserved"):
            topic.consumer("g", name="polybus-parked")
        consumer = topic.consumer("g", name="worker-1")
        assert isinstance(consumer, RedisConsumer) and consumer.name == "worker-1"


async def test_cancelling_a_close_is_not_swallowed(polybus_url: str) -> None:
    async with polybus.connect(polybus_url) as broker:
        topic = broker.topic(unique_name("close"))
        consumer = topic.consumer(unique_name("g"))
        await consumer.open()
        closing = asyncio.create_task(consumer.aclose())
        await asyncio.sleep(0)
        closing.cancel()
        await asyncio.wait({closing})
        assert closing.cancelled()
        await topic.delete()
