"""Lost connections and dead consumers: a SIGKILLed process, cut connections, a refused password."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import textwrap
from typing import Any

import pytest

import polybus
from polybus.testing import unique_name

pytestmark = pytest.mark.polybus(timeout=180)

CANARY = "Canary-Pw-91c4"

CONSUMER_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    import polybus

    async def main(url, topic, group):
        async with polybus.connect(url) as broker:
            async with broker.topic(topic).consumer(group, prefetch=10) as consumer:
                got = []
                while len(got) < 6:
                    d = await consumer.receive(timeout=10)
                    if d is None:
                        sys.exit("nothing to hold")
                    got.append(d)
                await got[0].ack()          # handled: must not come back
                await asyncio.sleep(0.5)    # give the coalesced ack time to leave
                print("holding", ",".join(d.body.decode() for d in got[1:]), flush=True)
                await asyncio.sleep(3600)   # killed here, five deliveries unsettled

    asyncio.run(main(*sys.argv[1:]))
    """
)


async def _drain(consumer: polybus.Consumer, quiet: float = 1.5) -> list[polybus.Delivery]:
    got = []
    while (d := await consumer.receive(timeout=quiet)) is not None:
        got.append(d)
        await d.ack()
    return got


async def test_deliveries_of_a_killed_consumer_process_come_back(polybus_url: str) -> None:
    topic_name, group = unique_name("kill"), unique_name("g")
    async with polybus.connect(polybus_url) as broker:
        topic = broker.topic(topic_name)
        async with topic.consumer(group):
            pass
        async with topic.producer() as producer:
            await producer.send_many([str(i) for i in range(6)])
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            CONSUMER_SCRIPT,
            polybus_url,
            topic_name,
            group,
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ},
        )
        try:
            assert process.stdout is not None
            line = await asyncio.wait_for(process.stdout.readline(), 60)
            assert line.startswith(b"holding "), line
            held = set(line.split()[1].decode().split(","))
        finally:
            process.send_signal(signal.SIGKILL)
            await process.wait()
        assert process.returncode == -signal.SIGKILL
        async with topic.consumer(group) as survivor:
            back = await _drain(survivor)
    assert {d.body.decode() for d in back} == held and len(back) == 5
    assert all(d.attempt == 2 for d in back)


async def test_send_and_receive_resume_after_the_connection_is_cut(polybus_url: str, cut_proxy: Any) -> None:
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


async def test_send_raises_when_the_broker_stays_unreachable(polybus_url: str, cut_proxy: Any) -> None:
    async with cut_proxy(polybus_url) as proxy:
        broker = polybus.connect(proxy.url, reconnect=polybus.ReconnectPolicy(give_up_after=2.0))
        async with broker, broker.topic(unique_name("down")).producer() as producer:
            await producer.send(b"ok")
            await proxy.stop()  # nothing listens any more, every connection dropped
            with pytest.raises(polybus.BrokerConnectionError):
                await producer.send(b"never confirmed")


async def test_wrong_password_raises_connection_error_without_the_password(
    polybus_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    host = polybus_url.split("@")[-1]
    broker = polybus.connect(f"amqp://guest:{CANARY}@{host}")
    with pytest.raises(polybus.BrokerConnectionError) as info:
        async with broker:
            pass
    await broker.aclose()
    error: BaseException | None = info.value
    assert "authentication" in str(error)
    while error is not None:
        assert CANARY not in str(error) and CANARY not in repr(error)
        error = error.__cause__ or error.__context__
    assert CANARY not in caplog.text
    assert CANARY not in repr(broker)
