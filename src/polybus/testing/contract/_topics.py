"""Topic cases: the topic life cycle, backlog stats, deleted topics."""

from __future__ import annotations

import asyncio
import time

import pytest

import polybus
from polybus.testing._names import unique_name
from polybus.testing.contract._config import ContractConfig
from polybus.testing.contract._helpers import _caps, _scratch, collect, needs, one

__all__ = ["TopicCases"]


class TopicCases:
    """Mixin of :class:`~polybus.testing.contract.BrokerContract`."""

    async def test_topic_lifecycle_and_missing_topic_errors(
        self, polybus_url: str, polybus_contract_config: ContractConfig
    ) -> None:
        async with polybus.connect(polybus_url) as broker:
            topic = _scratch(broker, "life")
            with pytest.raises(polybus.NotFoundError):
                await topic.stats()
            await topic.ensure()
            await topic.ensure()  # idempotent
            stats = await topic.stats()
            assert stats.topic == topic.name
            await topic.delete()
            with pytest.raises(polybus.NotFoundError):
                await topic.stats()
            with pytest.raises(polybus.NotFoundError):
                await topic.delete()
            with pytest.raises(polybus.ConfigurationError):
                broker.topic("no spaces or dots.allowed here")

    async def test_stats_report_backlog_per_group(self, polybus_url: str, cfg: ContractConfig) -> None:
        needs((await _caps(polybus_url)), "backlog_stats")
        async with polybus.connect(polybus_url) as broker:
            topic = _scratch(broker, "stats")
            group = unique_name("g")
            async with topic.consumer(group):
                pass
            async with topic.producer() as producer:
                await producer.send_many([b"1", b"2", b"3", b"4", b"5"])
            deadline = time.monotonic() + cfg.receive_timeout
            while True:  # some brokers count asynchronously
                stats = await topic.stats()
                backlog = stats.groups[group].backlog
                if backlog == 5 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)
            assert backlog == 5, stats
            async with topic.consumer(group) as consumer:
                got = await collect(consumer, 5, cfg.receive_timeout)
            assert len(got) == 5
            deadline = time.monotonic() + cfg.receive_timeout
            while True:
                backlog = (await topic.stats()).groups[group].backlog
                if backlog == 0 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)
            assert backlog == 0

    async def test_a_deleted_topic_stays_deleted_while_the_broker_works_on(
        self, polybus_url: str, cfg: ContractConfig
    ) -> None:
        async with polybus.connect(polybus_url) as broker:
            gone = _scratch(broker, "gone")
            async with gone.consumer(unique_name("g")) as consumer, gone.producer() as producer:
                await producer.send(b"before the delete")
                d = await one(consumer, cfg.receive_timeout)
                await d.ack()
            await gone.delete()
            other = _scratch(broker, "after")
            async with other.consumer(unique_name("g")) as consumer, other.producer() as producer:
                await producer.send(b"elsewhere")
                d = await one(consumer, cfg.receive_timeout)
                await d.ack()
                assert d.body == b"elsewhere"
            with pytest.raises(polybus.NotFoundError):
                await gone.stats()
            with pytest.raises(polybus.NotFoundError):
                await gone.delete()

    async def test_receiving_from_a_deleted_topic_raises_not_found(
        self, polybus_url: str, cfg: ContractConfig
    ) -> None:
        async with polybus.connect(polybus_url) as broker:
            topic = _scratch(broker, "deleted")
            async with topic.consumer(unique_name("g")) as grouped, topic.consumer() as listener:
                assert await grouped.receive(timeout=0.2) is None
                await topic.delete()
                await _receive_until_not_found("the group's consumer", grouped, cfg.receive_timeout)
                if cfg.listener_sees_deletion:
                    await _receive_until_not_found("the listener", listener, cfg.receive_timeout)


async def _receive_until_not_found(what: str, consumer: polybus.Consumer, within: float) -> None:
    """``receive()`` raises NotFoundError at once, or when the broker tells, within ``within`` s."""
    deadline = time.monotonic() + within
    try:
        while time.monotonic() < deadline:
            await consumer.receive(timeout=0.5)
    except polybus.NotFoundError:
        return
    pytest.fail(f"{what} kept receiving for {within}s after its topic was deleted")
