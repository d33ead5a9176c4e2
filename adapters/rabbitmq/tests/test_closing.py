"""Cancelling a task that is closing a consumer: the cancel propagates, and the group gets back
every delivery the consumer held unsettled (its channel is closed all the same)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import polybus
from polybus.testing import unique_name

pytestmark = pytest.mark.polybus(timeout=120)


async def _take(consumer: polybus.Consumer, count: int) -> list[polybus.Delivery]:
    """``count`` deliveries (acked), then checks that nothing more comes."""
    got = []
    while len(got) < count and (d := await consumer.receive(timeout=10)) is not None:
        got.append(d)
        await d.ack()
    extra = await consumer.receive(timeout=0.5)
    assert extra is None, f"{extra!r} came back although it was acked"
    return got


async def test_a_consumer_cancelled_mid_close_hands_back_what_it_held(polybus_url: str) -> None:
    cancelled_mid_close = 0
    async with polybus.connect(polybus_url) as broker:
        topic = broker.topic(unique_name("cancel"))
        for steps in range(1, 7):
            group = unique_name("g")
            consumer = topic.consumer(group, prefetch=20)
            await consumer.open()
            async with topic.producer() as producer:
                await producer.send_many([str(i) for i in range(10)])
            held = []
            while len(held) < 10:
                d = await consumer.receive(timeout=10)
                assert d is not None
                held.append(d)
            for d in held[:5]:
                await d.ack()  # coalesced: maybe not sent yet when the close starts
            closing = asyncio.ensure_future(consumer.aclose())
            for _ in range(steps):
                await asyncio.sleep(0)
            if closing.done():
                await closing
                continue
            closing.cancel()
            with pytest.raises(asyncio.CancelledError):
                await closing  # the cancel is not swallowed
            cancelled_mid_close += 1
            assert consumer.closed
            # the same connection lives on, so only a closed channel hands the deliveries back
            async with topic.consumer(group) as survivor:
                back = await _take(survivor, 5)
            assert sorted(int(d.text()) for d in back) == [5, 6, 7, 8, 9], f"after {steps} steps"
            assert all(d.attempt == 2 for d in back)
        await topic.delete()
    assert cancelled_mid_close >= 3


async def test_a_close_cancelled_while_re_subscribing_propagates(polybus_url: str, cut_proxy: Any) -> None:
    for steps in range(1, 4):
        async with cut_proxy(polybus_url) as proxy:
            broker = polybus.connect(proxy.url, reconnect=polybus.ReconnectPolicy(give_up_after=60))
            async with broker:
                topic = broker.topic(unique_name("resub"))
                consumer = topic.consumer(unique_name("g"))
                await consumer.open()
                await proxy.stop()  # the connection is cut and nothing listens: re-subscribing waits
                assert await consumer.receive(timeout=0.5) is None  # the re-subscription is under way
                closing = asyncio.ensure_future(consumer.aclose())
                for _ in range(steps):
                    await asyncio.sleep(0)
                assert not closing.done()
                closing.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await closing
                assert consumer.closed
