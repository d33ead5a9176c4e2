"""Failures: a killed consumer process, an endpoint that goes away and comes back, secrets on failure."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
import textwrap
import time
from typing import Any

import pytest

import polybus
from polybus.testing import TcpRelay, unique_name

pytestmark = pytest.mark.polybus(timeout=90)

CHILD = textwrap.dedent(
    """
    import asyncio, sys
    import polybus

    async def main():
        async with polybus.connect(sys.argv[1]) as broker:
            async with broker.topic(sys.argv[2]).consumer(sys.argv[3]) as consumer:
                d = await consumer.receive(timeout=30)
                print("got", d.id, d.attempt, flush=True)
                await asyncio.sleep(3600)  # the handler never finishes: the process is killed

    asyncio.run(main())
    """
)


async def test_messages_of_a_killed_consumer_process_come_back(url_with: Any) -> None:
    url = url_with(visibility_timeout=2)
    topic_name, group = unique_name("killed"), unique_name("g")
    async with polybus.connect(url) as broker:
        topic = broker.topic(topic_name)
        async with topic.consumer(group):
            pass
        async with topic.producer() as producer:
            sent = await producer.send(b"survives a SIGKILL")
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-c", CHILD, url, topic_name, group, stdout=asyncio.subprocess.PIPE
        )
        try:
            assert child.stdout is not None
            line = (await asyncio.wait_for(child.stdout.readline(), 30)).decode().split()
            assert line[:3] == ["got", sent, "1"], line
        finally:
            child.send_signal(signal.SIGKILL)
            await child.wait()
        async with topic.consumer(group) as survivor:
            d = await survivor.receive(timeout=15)
            assert d is not None, "the killed process's message never came back"
            await d.ack()
    assert d.id == sent and d.body == b"survives a SIGKILL" and d.attempt == 2


async def test_sends_during_an_outage_succeed_once_the_endpoint_is_back(polybus_url: str) -> None:
    proxy = TcpRelay(polybus_url)
    await proxy.start()
    url = proxy.url
    policy = polybus.ReconnectPolicy(initial=0.1, maximum=0.5, give_up_after=30)
    async with polybus.connect(url, reconnect=policy) as broker:
        topic = broker.topic(unique_name("outage"))
        async with topic.consumer(unique_name("g")) as consumer, topic.producer() as producer:
            await producer.send(b"before")
            await proxy.stop()
            during = asyncio.create_task(producer.send(b"during"))
            receiving = asyncio.create_task(consumer.receive(timeout=1.5))
            await asyncio.sleep(1.5)
            assert not during.done(), "the send returned while the endpoint was unreachable"
            await receiving  # a receive during the outage waits (and may return None); it does not raise
            await proxy.start()
            sent = await asyncio.wait_for(during, 20)
            got = []
            while len(got) < 2 and (d := await consumer.receive(timeout=10)) is not None:
                got.append(d)
                await d.ack()
        await proxy.stop()
    assert sorted(d.body for d in got) == [b"before", b"during"]
    assert sent in {d.id for d in got}


async def test_a_receive_raises_once_the_outage_outlasts_the_reconnect_policy(polybus_url: str) -> None:
    async with TcpRelay(polybus_url) as proxy:
        url = proxy.url + "&reconnect_initial=0.1&reconnect_maximum=0.2&reconnect_give_up_after=1.5"
        async with polybus.connect(url) as broker:
            topic = broker.topic(unique_name("giveup"))
            async with topic.consumer(unique_name("g")) as consumer:
                assert await consumer.receive(timeout=0.1) is None
                await proxy.stop()
                started = time.monotonic()
                with pytest.raises(polybus.BrokerConnectionError):
                    while time.monotonic() - started < 20:
                        await consumer.receive(timeout=1)
                assert time.monotonic() - started < 10
                await proxy.start()
                assert await consumer.receive(timeout=0.5) is None  # the endpoint is back: no error
            await topic.delete()


async def test_unreachable_endpoint_logs_and_raises_without_the_secret(
    polybus_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    canary = "Canary-Secret-4b1c"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    broker = polybus.connect(f"sqs://AKIDCANARY:{canary}@127.0.0.1:{port}?region=us-east-1&tls=false")
    with pytest.raises(polybus.BrokerConnectionError) as info:
        async with broker:
            pass
    text = f"{info.value!r} {info.value} {info.value.__cause__!r} {broker!r} {caplog.text}"
    assert canary not in text
    assert os.environ.get("AWS_SECRET_ACCESS_KEY") != canary
