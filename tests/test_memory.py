"""What the contract suite does not cover about memory://: shared namespaces across brokers and
event loops, isolation between names, stats, and delayed entries surviving their consumer."""

import asyncio
import time

import pytest

import polybus
from polybus.testing import unique_name


def test_brokers_with_one_name_share_topics_across_event_loops() -> None:
    name = unique_name("t")

    async def produce() -> None:
        async with polybus.connect("memory://shared") as broker, broker.topic(name).consumer("g"):
            pass  # create the group
        async with polybus.connect("memory://shared") as broker, broker.topic(name).producer() as p:
            await p.send(b"across loops")

    async def consume() -> bytes:
        async with polybus.connect("memory://shared") as broker, broker.topic(name).consumer("g") as c:
            d = await c.receive(timeout=2)
            assert d is not None
            await d.ack()
            return d.body

    asyncio.run(produce())
    assert asyncio.run(consume()) == b"across loops"


async def test_different_names_are_isolated() -> None:
    name = unique_name("t")
    async with polybus.connect("memory://one") as one, polybus.connect("memory://two") as two:
        await one.topic(name).ensure()
        with pytest.raises(polybus.NotFoundError):
            await two.topic(name).stats()


def test_delayed_nack_survives_the_event_loop_that_nacked() -> None:
    name = unique_name("t")

    async def nack_then_leave() -> None:
        async with polybus.connect("memory://") as broker:
            topic = broker.topic(name)
            async with topic.consumer("g") as c, topic.producer() as p:
                await p.send(b"later")
                d = await c.receive(timeout=2)
                assert d is not None
                await d.nack(delay=0.3)

    async def come_back() -> tuple[int, float]:
        started = time.monotonic()
        async with polybus.connect("memory://") as broker, broker.topic(name).consumer("g") as c:
            d = await c.receive(timeout=5)
            assert d is not None
            await d.ack()
            return d.attempt, time.monotonic() - started

    asyncio.run(nack_then_leave())
    attempt, waited = asyncio.run(come_back())
    assert attempt == 2
    assert waited < 5


async def test_stats_count_backlog_in_flight_and_messages() -> None:
    async with polybus.connect("memory://") as broker:
        topic = broker.topic(unique_name("t"))
        async with topic.consumer("g", prefetch=10) as c, topic.producer() as p:
            await p.send_many([b"1", b"2", b"3"])
            d = await c.receive(timeout=1)
            assert d is not None
            stats = await topic.stats()
            # the consumer fetched all three into its buffer: in flight, no longer backlog
            assert stats.groups["g"] == polybus.GroupStats(backlog=0, in_flight=3)
            assert stats.messages == 3
            await d.ack()
        stats = await topic.stats()
        assert stats.groups["g"] == polybus.GroupStats(backlog=2, in_flight=0)


async def test_sending_to_a_deleted_topic_raises_not_found() -> None:
    # a consumer's receive() raising NotFoundError is a contract case
    async with polybus.connect("memory://") as broker:
        topic = broker.topic(unique_name("t"))
        async with topic.consumer("g"), topic.producer() as p:
            await topic.delete()
            with pytest.raises(polybus.NotFoundError):
                await p.send(b"x")


async def test_max_message_size_is_a_setting() -> None:
    # the limit counts the body plus header names and values (content-type: 36 bytes here)
    async with polybus.connect("memory://?max_message_size=50") as broker:
        assert broker.capabilities.max_message_size == 50
        async with broker.topic(unique_name("t")).producer() as p:
            await p.send(b"x" * 14)
            with pytest.raises(
                polybus.MessageTooLargeError, match="51 bytes is larger than the broker's limit of 50"
            ):
                await p.send(b"x" * 15)
