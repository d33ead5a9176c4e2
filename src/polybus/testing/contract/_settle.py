"""Settling cases: ack, nack (with delay), reject, double settle, close, cancel, prefetch."""

from __future__ import annotations

import asyncio
import time

import pytest

import polybus
from polybus import Support
from polybus.testing._names import unique_name
from polybus.testing.contract._config import ContractConfig
from polybus.testing.contract._helpers import _caps, _scratch, bodies, collect, expect_nothing, needs, one

__all__ = ["SettleCases"]


class SettleCases:
    """Mixin of :class:`~polybus.testing.contract.BrokerContract`."""

    async def test_nack_redelivers_with_attempt_incremented(
        self, polybus_url: str, cfg: ContractConfig
    ) -> None:
        caps = await _caps(polybus_url)
        async with polybus.connect(polybus_url) as broker:
            topic = _scratch(broker, "nack")
            async with topic.consumer(unique_name("g")) as consumer, topic.producer() as producer:
                sent_id = await producer.send(b"retry me")
                first = await one(consumer, cfg.receive_timeout)
                await first.nack()
                second = await one(consumer, cfg.receive_timeout)
                await second.nack()
                third = await one(consumer, cfg.receive_timeout)
                await third.ack()
                await expect_nothing(consumer, cfg.quiet_period)
        assert first.id == second.id == third.id == sent_id
        assert third.body == b"retry me"
        if caps.delivery_count:
            assert (first.attempt, second.attempt, third.attempt) == (1, 2, 3)

    async def test_nack_with_delay_waits_without_holding_up_others(
        self, polybus_url: str, cfg: ContractConfig
    ) -> None:
        needs((await _caps(polybus_url)), "delayed_nack")
        delay = cfg.nack_delay
        async with polybus.connect(polybus_url) as broker:
            topic = _scratch(broker, "delay")
            async with topic.consumer(unique_name("g")) as consumer, topic.producer() as producer:
                await producer.send(b"slow")
                first = await one(consumer, cfg.receive_timeout)
                nacked_at = time.monotonic()
                await first.nack(delay=delay)
                await producer.send_many([f"fast-{i}".encode() for i in range(10)])
                fast = await collect(consumer, 10, cfg.receive_timeout)
                fast_done = time.monotonic() - nacked_at
                again = await one(consumer, delay + cfg.receive_timeout)
                waited = time.monotonic() - nacked_at
                await again.ack()
        assert sorted(bodies(fast)) == sorted(f"fast-{i}".encode() for i in range(10)), (
            "messages sent after the nack were held up or mixed with the delayed one"
        )
        assert again.body == b"slow" and again.id == first.id
        assert fast_done < waited
        assert waited >= delay * 0.8, f"redelivered after {waited:.2f}s, before its delay of {delay}s"

    async def test_reject_never_redelivers(self, polybus_url: str, cfg: ContractConfig) -> None:
        async with polybus.connect(polybus_url) as broker:
            topic = _scratch(broker, "reject")
            async with topic.consumer(unique_name("g")) as consumer, topic.producer() as producer:
                await producer.send(b"poison")
                bad = await one(consumer, cfg.receive_timeout)
                await bad.reject()
                await producer.send(b"fine")
                good = await one(consumer, cfg.receive_timeout)
                await good.ack()
                assert good.body == b"fine"
                await expect_nothing(consumer, cfg.quiet_period * 2)

    async def test_settling_twice_raises_delivery_state_error(
        self, polybus_url: str, cfg: ContractConfig
    ) -> None:
        async with polybus.connect(polybus_url) as broker:
            topic = _scratch(broker, "twice")
            async with topic.consumer(unique_name("g")) as consumer, topic.producer() as producer:
                await producer.send(b"x")
                d = await one(consumer, cfg.receive_timeout)
                await d.ack()
                with pytest.raises(polybus.DeliveryStateError):
                    await d.ack()
                with pytest.raises(polybus.DeliveryStateError):
                    await d.nack()

    async def test_closed_consumer_hands_unacked_back_to_group(
        self, polybus_url: str, cfg: ContractConfig
    ) -> None:
        caps = await _caps(polybus_url)
        group = unique_name("g")
        async with polybus.connect(polybus_url) as broker:
            topic = _scratch(broker, "close")
            async with topic.consumer(group) as first, topic.producer() as producer:
                await producer.send_many([b"a", b"b", b"c"])
                held = await collect(first, 3, cfg.receive_timeout, ack=False)
                assert len(held) == 3
                # ack the first one received (without a key, arrival order across partitions or
                # shards need not be send order)
                await held[0].ack()
            # closed with two unsettled: a late ack is refused, and both come back
            with pytest.raises(polybus.ClosedError):
                await held[1].ack()
            async with topic.consumer(group) as second:
                again = await collect(second, 2, cfg.receive_timeout * 2)
                await expect_nothing(second, cfg.quiet_period)
        assert sorted(bodies(again)) == sorted(bodies(held[1:]))
        if caps.delivery_count is Support.NATIVE:
            assert all(d.attempt == 2 for d in again)

    async def test_cancelled_handler_task_gets_its_message_redelivered(
        self, polybus_url: str, cfg: ContractConfig
    ) -> None:
        group = unique_name("g")
        received = asyncio.Event()
        async with polybus.connect(polybus_url) as broker:
            topic = _scratch(broker, "cancel")

            async def handler_task() -> None:
                async with topic.consumer(group) as consumer:
                    await one(consumer, cfg.receive_timeout)
                    received.set()
                    await asyncio.sleep(3600)  # a handler that never finishes

            async with topic.consumer(group):
                pass  # the group exists before the send
            async with topic.producer() as producer:
                await producer.send(b"in progress")
            task = asyncio.create_task(handler_task())
            await asyncio.wait_for(received.wait(), cfg.receive_timeout)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            async with topic.consumer(group) as other:
                again = await one(other, cfg.receive_timeout * 2)
                await again.ack()
        assert again.body == b"in progress"

    async def test_prefetch_bounds_unsettled_deliveries(self, polybus_url: str, cfg: ContractConfig) -> None:
        needs((await _caps(polybus_url)), "competing_consumers")
        group = unique_name("g")
        async with polybus.connect(polybus_url) as broker:
            topic = _scratch(broker, "prefetch")
            async with topic.consumer(group, prefetch=2) as small, topic.producer() as producer:
                await producer.send_many([b"1", b"2", b"3"])
                held = await collect(small, 2, cfg.receive_timeout, ack=False)
                assert len(held) == 2
                assert await small.receive(timeout=cfg.quiet_period) is None, "prefetch=2 handed out a third"
                async with topic.consumer(group) as other:
                    maybe = await other.receive(timeout=cfg.receive_timeout * 2)
                    if maybe is None and cfg.partitioned:
                        # the third may share a partition with a held one, and a partition stays
                        # with its member: it arrives once the held ones are settled
                        for d in held:
                            await d.ack()
                        maybe = await small.receive(timeout=cfg.receive_timeout) or await other.receive(
                            timeout=cfg.receive_timeout
                        )
                    assert maybe is not None, "the third message never reached another member of the group"
                    third = maybe
                    await third.ack()
                for d in held:
                    if not d.settled:
                        await d.ack()
        assert sorted([*bodies(held), third.body]) == [b"1", b"2", b"3"]
