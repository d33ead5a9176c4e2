"""``BrokerProcess``: a private durable broker that a test kills and restarts, keeping its data."""

from __future__ import annotations

import asyncio
import shutil

import pytest

import polybus
from polybus.testing import BrokerProcess, FaultInjector, NotStartable, unique_name


@pytest.mark.parametrize("kind", ["memory", "sqs", "pulsar"])
def test_kinds_without_a_durable_process_say_why(kind: str) -> None:
    reason = BrokerProcess.unsupported(kind)
    assert reason
    with pytest.raises(NotStartable, match=reason[:20]):
        BrokerProcess(kind)


def test_the_process_kinds_are_supported() -> None:
    for kind in ("redis", "nats", "rabbitmq", "kafka"):
        assert BrokerProcess.unsupported(kind) is None
    process = BrokerProcess("redis")
    for method in ("cut", "stop", "start", "__aenter__", "__aexit__"):  # a FaultInjector once entered
        assert callable(getattr(process, method))
    assert hasattr(FaultInjector, "cut")


@pytest.mark.polybus(timeout=60)
async def test_a_killed_broker_comes_back_on_its_port_with_what_it_confirmed() -> None:
    if not shutil.which("redis-server"):
        pytest.skip("redis-server not installed")
    topic = unique_name("restart")
    async with BrokerProcess("redis") as process:
        assert isinstance(process, FaultInjector)
        url = process.url
        workdir = process._workdir
        async with polybus.connect(url) as broker:
            await broker.topic(topic).ensure()
            async with broker.topic(topic).consumer("g"):
                pass
            async with broker.topic(topic).producer() as producer:
                sent = set(await producer.send_many([polybus.Message(body=b"x") for _ in range(20)]))
        await process.kill()
        assert not process.running
        await process.restart()
        assert process.url == url and process.kills == 1 and process.starts == 2
        got: set[str] = set()
        async with polybus.connect(url) as broker, broker.topic(topic).consumer("g") as consumer:
            while got != sent:
                delivery = await consumer.receive(timeout=10)
                assert delivery is not None, f"{len(sent - got)} confirmed messages gone after a restart"
                got.add(delivery.id)
                await delivery.ack()
    assert workdir is not None and not await asyncio.to_thread(workdir.exists)
