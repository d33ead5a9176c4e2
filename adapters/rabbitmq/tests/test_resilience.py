"""RabbitMQ under connection loss: an ack lost with its channel, and 10,000 sends across a cut.

The shared behaviour (a SIGKILLed consumer, reconnecting after a cut or an outage, a wrong password)
is in the contract suite; these tests check what is particular to AMQP channels and confirms.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import polybus
from polybus.testing import unique_name

pytestmark = pytest.mark.polybus(timeout=180)


async def _drain(consumer: polybus.Consumer, quiet: float = 1.5) -> list[polybus.Delivery]:
    got = []
    while (d := await consumer.receive(timeout=quiet)) is not None:
        got.append(d)
        await d.ack()
    return got


async def test_a_delivery_acked_after_its_channel_died_comes_back(polybus_url: str, cut_proxy: Any) -> None:
    async with cut_proxy(polybus_url) as proxy:
        async with polybus.connect(proxy.url) as broker:
            topic = broker.topic(unique_name("cut"))
            async with topic.consumer(unique_name("g")) as consumer, topic.producer() as producer:
                await producer.send(b"before")
                held = await consumer.receive(timeout=10)
                assert held is not None and held.body == b"before"
                proxy.cut()
                await asyncio.sleep(0.2)
                await held.ack()  # its channel died with the connection: RabbitMQ redelivers it
                await producer.send(b"after")  # reconnects, then is confirmed
                got = await _drain(consumer, quiet=3)
        assert proxy.accepted >= 2, "the client never reconnected"
    assert sorted(d.body for d in got) == [b"after", b"before"]
    assert next(d for d in got if d.body == b"before").attempt == 2


async def test_connection_cut_during_10000_sends_loses_no_confirmed_message(
    polybus_url: str, cut_proxy: Any
) -> None:
    total, senders = 10_000, 20
    confirmed: set[str] = set()
    raised: list[BaseException] = []
    group = unique_name("g")
    async with cut_proxy(polybus_url) as proxy, polybus.connect(polybus_url) as direct:
        topic_name = unique_name("stream")
        async with direct.topic(topic_name).consumer(group):
            pass  # the group exists before the first send
        async with polybus.connect(proxy.url) as broker:
            topic = broker.topic(topic_name)
            async with topic.producer() as producer:
                a_third_confirmed = asyncio.Event()

                async def send(worker: int) -> None:
                    for i in range(worker, total, senders):
                        try:
                            confirmed.add(await producer.send(str(i)))
                        except polybus.PolybusError as exc:
                            raised.append(exc)
                        if len(confirmed) >= total // 3:
                            a_third_confirmed.set()

                async def cut_midway() -> None:
                    await a_third_confirmed.wait()
                    proxy.cut()

                await asyncio.gather(cut_midway(), *(send(w) for w in range(senders)))
        assert proxy.cuts >= 1 and proxy.accepted >= 2
        assert len(confirmed) + len(raised) == total
        assert all(isinstance(e, polybus.BrokerConnectionError | polybus.PublishError) for e in raised)
        seen: set[str] = set()
        async with direct.topic(topic_name).consumer(group, prefetch=500) as consumer:
            while not confirmed <= seen:
                d = await consumer.receive(timeout=15)
                assert d is not None, f"{len(confirmed - seen)} confirmed messages never arrived"
                seen.add(d.id)
                await d.ack()
    print(f"10,000 sends across a cut: {len(confirmed)} confirmed, {len(raised)} raised")


async def test_a_send_on_a_half_open_connection_is_resent(polybus_url: str) -> None:
    """The relay freezes the connection (open, silent): aiormq notices the missed heartbeats,
    closes it and cancels the confirmations still awaited. The send is resent on a new
    connection; it used to raise the bare CancelledError (found by the chaos suite's half-open
    scenario)."""
    from polybus.testing import RelayFaults, with_options

    async with (
        RelayFaults(polybus_url) as faults,
        polybus.connect(with_options(faults.url, heartbeat=1)) as broker,
    ):
        topic = broker.topic(unique_name("half-open"))
        async with topic.consumer(unique_name("g")) as consumer, topic.producer() as producer:
            await producer.send(b"before")
            await faults.freeze()
            sending = asyncio.create_task(producer.send(b"during"))
            await asyncio.sleep(0.5)  # the publish is out, its confirmation awaited
            before = faults.relay.accepted
            await asyncio.wait_for(sending, 30)
            assert faults.relay.accepted > before and faults.relay.frozen  # reconnected by itself
            await faults.thaw()
            got = {d.body for d in await _drain(consumer, quiet=3)}
        await topic.delete()
    assert {b"before", b"during"} <= got
