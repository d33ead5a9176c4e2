"""Every process sees every group: ``stats()`` and ``delete()`` read the topic's group registry.

Two ``polybus.connect`` objects are two connections, as two processes would have.
"""

from __future__ import annotations

import asyncio

import aio_pika
import aiormq.exceptions
import pytest
from polybus_rabbitmq._wire import group_queue_name, registry_lock_name, registry_queue_name

import polybus
from polybus.testing import unique_name

pytestmark = pytest.mark.polybus(timeout=120)


async def _join(broker: polybus.Broker, topic: str, group: str) -> None:
    async with broker.topic(topic).consumer(group):
        pass


async def _queue_exists(url: str, name: str) -> bool:
    raw = await aio_pika.connect(url)
    try:
        channel = await raw.channel()
        try:
            await channel.declare_queue(name, passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            return False
        return True
    finally:
        await raw.close()


async def test_groups_declared_on_one_connection_are_listed_and_deleted_by_another(polybus_url: str) -> None:
    topic = unique_name("reg")
    mine, theirs = [unique_name("a"), unique_name("b")], unique_name("c")
    async with polybus.connect(polybus_url) as one, polybus.connect(polybus_url) as two:
        for group in mine:
            await _join(one, topic, group)
        await _join(two, topic, theirs)
        async with one.topic(topic).producer() as producer:
            await producer.send_many([b"x", b"y", b"z"])
        for broker in (one, two):
            stats = await broker.topic(topic).stats()
            assert set(stats.groups) == {*mine, theirs}
            assert {s.backlog for s in stats.groups.values()} == {3}
        await two.topic(topic).delete()
        with pytest.raises(polybus.NotFoundError):
            await one.topic(topic).stats()
    for name in (*(group_queue_name(topic, g) for g in (*mine, theirs)), registry_queue_name(topic)):
        assert not await _queue_exists(polybus_url, name), f"{name} was left behind"


async def test_groups_created_at_once_on_two_connections_are_all_recorded(polybus_url: str) -> None:
    topic = unique_name("race")
    groups = [unique_name("g") for _ in range(12)]
    async with polybus.connect(polybus_url) as one, polybus.connect(polybus_url) as two:
        await one.topic(topic).ensure()
        await asyncio.gather(*(_join(one if i % 2 else two, topic, g) for i, g in enumerate(groups)))
        # reading the registry leaves it whole (a read re-writes it), and joining again adds nothing
        for _ in range(3):
            assert sorted((await two.topic(topic).stats()).groups) == sorted(groups)
        await _join(one, topic, groups[0])
        assert sorted((await one.topic(topic).stats()).groups) == sorted(groups)
        assert not await _queue_exists(polybus_url, registry_lock_name(topic))  # released
        await one.topic(topic).delete()


async def test_a_reader_that_dies_half_way_loses_no_group(polybus_url: str) -> None:
    topic = unique_name("dead")
    groups = [unique_name("g") for _ in range(3)]
    async with polybus.connect(polybus_url) as broker:
        for group in groups:
            await _join(broker, topic, group)
        raw = await aio_pika.connect(polybus_url)
        channel = await raw.channel()
        queue = await channel.get_queue(registry_queue_name(topic))
        taken = [await queue.get(no_ack=False) for _ in groups]
        assert sorted(m.body.decode() for m in taken) == sorted(groups)
        await raw.close()  # gone before it could write them back: RabbitMQ requeues them
        assert sorted((await broker.topic(topic).stats()).groups) == sorted(groups)
        await broker.topic(topic).delete()


async def test_a_recorded_group_whose_queue_is_gone_is_left_out(polybus_url: str) -> None:
    topic, kept, dropped = unique_name("gone"), unique_name("k"), unique_name("d")
    async with polybus.connect(polybus_url) as broker:
        await _join(broker, topic, kept)
        await _join(broker, topic, dropped)
        raw = await aio_pika.connect(polybus_url)
        try:
            channel = await raw.channel()
            await channel.queue_delete(group_queue_name(topic, dropped))
        finally:
            await raw.close()
        assert list((await broker.topic(topic).stats()).groups) == [kept]
        await broker.topic(topic).delete()


async def test_a_held_registry_lock_times_out_with_operation_timeout(polybus_url: str) -> None:
    topic = unique_name("locked")
    raw = await aio_pika.connect(polybus_url)
    try:
        channel = await raw.channel()
        await channel.declare_exchange(topic, aio_pika.ExchangeType.FANOUT, durable=True)
        await channel.declare_queue(registry_lock_name(topic), exclusive=True)  # another process holds it
        async with polybus.connect(polybus_url, operation_timeout=0.5) as broker:
            with pytest.raises(polybus.OperationTimeout, match="locked"):
                await broker.topic(topic).stats()
        await channel.exchange_delete(topic)
    finally:
        await raw.close()
