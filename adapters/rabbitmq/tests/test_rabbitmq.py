"""RabbitMQ-specific behaviour: unroutable sends, a channel lost mid-handler, queue types, topology."""

from __future__ import annotations

import asyncio
import time

import aio_pika
import pytest
from polybus_rabbitmq import RabbitBroker, RabbitConsumer

import polybus
from polybus.testing import unique_name

pytestmark = pytest.mark.polybus(timeout=120)


async def _one(consumer: polybus.Consumer, timeout: float = 10) -> polybus.Delivery:
    delivery = await consumer.receive(timeout=timeout)
    assert delivery is not None, f"nothing arrived on {consumer!r} within {timeout}s"
    return delivery


async def test_send_to_topic_without_group_is_dropped_then_delivered_once_a_group_exists(
    polybus_url: str,
) -> None:
    async with polybus.connect(polybus_url) as broker:
        topic = broker.topic(unique_name("nogroup"))
        async with topic.producer() as producer:
            await producer.send(b"nobody listens")  # confirmed by RabbitMQ, returned as unroutable
            assert producer.unroutable == 1  # type: ignore[attr-defined]
            async with topic.consumer(unique_name("g")) as consumer:
                await producer.send(b"someone listens")
                assert producer.unroutable == 1  # type: ignore[attr-defined]
                got = await _one(consumer)
                await got.ack()
                assert got.body == b"someone listens"
                assert await consumer.receive(timeout=1.0) is None


async def test_on_unroutable_raise_refuses_a_send_no_group_will_see(polybus_url: str) -> None:
    async with polybus.connect(polybus_url, on_unroutable="raise") as broker:
        topic = broker.topic(unique_name("strict"))
        async with topic.producer() as producer:
            with pytest.raises(polybus.PublishError, match="no group"):
                await producer.send(b"lost otherwise")
            async with topic.consumer(unique_name("g")) as consumer:
                await producer.send(b"kept")
                got = await _one(consumer)
                await got.ack()
                assert got.body == b"kept"


async def test_channel_closed_mid_handler_returns_the_message_to_the_queue(polybus_url: str) -> None:
    group = unique_name("g")
    async with polybus.connect(polybus_url) as broker:
        topic = broker.topic(unique_name("chan"))
        async with topic.consumer(group) as consumer, topic.producer() as producer:
            await producer.send(b"in the handler")
            first = await _one(consumer)
            assert first.attempt == 1
            # The broker closes the consumer's channel while the handler runs (here: a channel
            # error provoked on it, as a server-side failure would).
            assert isinstance(consumer, RabbitConsumer)
            subscription = consumer._subscription
            assert subscription is not None
            underlay = await subscription.channel.get_underlay_channel()
            await underlay.basic_ack(999_999)  # unknown tag -> PRECONDITION_FAILED closes the channel
            for _ in range(100):
                if subscription.channel.is_closed:
                    break
                await asyncio.sleep(0.05)
            assert subscription.channel.is_closed
            await first.ack()  # too late: the channel is gone, so this must not be the end of it
            again = await _one(consumer, 15)  # the consumer re-subscribed on a new channel
            await again.ack()
            assert again.body == b"in the handler" and again.id == first.id
            assert again.attempt == 2
            await producer.send(b"after")
            after = await _one(consumer)
            await after.ack()
            assert after.body == b"after"
            assert await consumer.receive(timeout=1.0) is None


async def test_classic_queues_count_attempts_too(polybus_url: str) -> None:
    async with polybus.connect(polybus_url, queue_type="classic") as broker:
        assert broker.capabilities.delivery_count is polybus.Support.EMULATED
        topic = broker.topic(unique_name("classic"))
        group = unique_name("g")
        async with topic.consumer(group) as consumer, topic.producer() as producer:
            await producer.send(b"x")
            first = await _one(consumer)
            await first.nack()
            second = await _one(consumer)
            await second.nack(delay=0.2)
            third = await _one(consumer)
        async with topic.consumer(group) as again:  # third was handed back by closing
            fourth = await _one(again)
            await fourth.ack()
        assert [d.attempt for d in (first, second, third, fourth)] == [1, 2, 3, 4]
        assert len({d.id for d in (first, second, third, fourth)}) == 1
        await topic.delete()


async def test_group_queue_is_durable_quorum_queue_bound_to_a_fanout_exchange(polybus_url: str) -> None:
    async with polybus.connect(polybus_url) as broker:
        assert isinstance(broker, RabbitBroker)
        topic = broker.topic(unique_name("topo"))
        group = unique_name("g")
        async with topic.consumer(group):
            pass
        raw = await aio_pika.connect(polybus_url)
        try:
            channel = await raw.channel()
            await channel.get_exchange(topic.name, ensure=True)
            # declaring it as quorum again is accepted only if it is one
            await channel.declare_queue(
                f"{topic.name}.{group}", durable=True, arguments={"x-queue-type": "quorum"}
            )
        finally:
            await raw.close()
        await topic.delete()
        with pytest.raises(polybus.NotFoundError):
            await topic.stats()


async def test_long_nack_delay_does_not_hold_up_a_short_one(polybus_url: str) -> None:
    async with polybus.connect(polybus_url) as broker:
        topic = broker.topic(unique_name("delays"))
        async with topic.consumer(unique_name("g"), prefetch=10) as consumer, topic.producer() as producer:
            await producer.send_many([b"long", b"short"])
            a, b = await _one(consumer), await _one(consumer)
            started = time.monotonic()
            for d in (a, b):
                await d.nack(delay=30 if d.body == b"long" else 0.3)
            back = await _one(consumer, 10)
            await back.ack()
            assert back.body == b"short" and back.attempt == 2
            assert 0.25 <= time.monotonic() - started < 10


async def test_coalesced_acks_never_cover_an_unsettled_delivery(polybus_url: str) -> None:
    group = unique_name("g")
    async with polybus.connect(polybus_url) as broker:
        topic = broker.topic(unique_name("coalesce"))
        async with topic.producer() as producer:
            async with topic.consumer(group, prefetch=40) as consumer:
                await producer.send_many([str(i) for i in range(30)])
                held = []
                while len(held) < 30:
                    held.append(await _one(consumer))
                for d in held:
                    number = int(d.text())
                    if number in (3, 17):
                        continue  # still "in a handler"
                    if number in (5, 21):
                        await d.reject()
                    elif number == 9:
                        await d.nack()
                    else:
                        await d.ack()
                again = await _one(consumer)  # the nacked copy, after the acks were flushed
                await again.ack()
                assert again.text() == "9" and again.attempt == 2
                await asyncio.sleep(0.3)
            # closed with 3 and 17 unsettled: exactly those come back
            async with topic.consumer(group) as second:
                back = []
                while (d := await second.receive(timeout=1.5)) is not None:
                    back.append(d)
                    await d.ack()
        assert sorted(int(d.text()) for d in back) == [3, 17]
        assert all(d.attempt == 2 for d in back)


async def test_auto_joins_an_existing_classic_group_queue(polybus_url: str) -> None:
    topic_name, group = unique_name("legacy"), unique_name("g")
    old = polybus.connect(polybus_url, queue_type="classic")
    async with old, old.topic(topic_name).consumer(group):
        pass  # a classic queue, as an older deployment would have made
    async with polybus.connect(polybus_url) as broker:
        topic = broker.topic(topic_name)
        async with topic.consumer(group) as consumer, topic.producer() as producer:
            await producer.send(b"still works")
            got = await _one(consumer)
            await got.ack()
            assert got.body == b"still works"
        strict = polybus.connect(polybus_url, queue_type="quorum")
        with pytest.raises(polybus.ConfigurationError):
            async with strict, strict.topic(topic_name).consumer(group):
                pass
        await strict.aclose()
        await topic.delete()
