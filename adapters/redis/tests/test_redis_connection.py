"""Settings, secrets, and losing the connection: CLIENT KILL, and a Redis server that restarts."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest
import redis.asyncio as raw_redis
from polybus_redis import RedisBroker, RedisSettings

import polybus
from polybus import ReconnectPolicy
from polybus.testing import unique_name

CANARY = "Canary-Redis-Pw-41d7"


def test_url_and_options_build_the_settings() -> None:
    s = RedisSettings.from_url(
        f"rediss://app:{CANARY}@cache.example:6380/3?visibility_timeout=5&ssl_ca_certs=/ca.pem",
        max_len=1000,
        ssl_cert_reqs="none",
    )
    assert (s.host, s.port, s.db, s.username, s.tls) == ("cache.example", 6380, 3, "app", True)
    assert s.password is not None and s.password.get_secret_value() == CANARY
    assert (s.visibility_timeout, s.max_len) == (5.0, 1000)
    assert (s.ssl_ca_certs, s.ssl_cert_reqs) == ("/ca.pem", "none")
    kwargs = s.connection_kwargs()
    assert kwargs["connection_class"].__name__ == "SSLConnection" and kwargs["ssl_ca_certs"] == "/ca.pem"
    broker = RedisBroker(s)
    for text in (repr(s), str(s), repr(broker), broker.display_url):
        assert CANARY not in text
    assert broker.display_url == "rediss://app:***@cache.example:6380/3"


def test_bad_options_raise_configuration_error_without_the_password() -> None:
    with pytest.raises(polybus.ConfigurationError) as info:
        polybus.connect(f"redis://:{CANARY}@localhost/0?visibility_timeout=soon")
    assert "visibility_timeout" in str(info.value) and CANARY not in str(info.value)
    with pytest.raises(polybus.ConfigurationError):
        polybus.connect("redis://localhost/0", no_such_option=1)


async def test_wrong_password_raises_connection_error_without_leaking_it(
    polybus_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    broker = polybus.connect(polybus_url, username="nobody-" + unique_name("u"), password=CANARY)
    with pytest.raises(polybus.BrokerConnectionError) as info:
        async with broker:
            pass
    chain: BaseException | None = info.value
    while chain is not None:
        assert CANARY not in str(chain) and CANARY not in repr(chain)
        chain = chain.__cause__ or chain.__context__
    assert CANARY not in repr(broker) and CANARY not in caplog.text


async def _kill_clients(url: str, name: str) -> int:
    async with raw_redis.Redis.from_url(url) as admin:
        clients = await admin.client_list()
        ids = [c["id"] for c in clients if c.get("name") == name]
        for client_id in ids:
            await admin.execute_command("CLIENT", "KILL", "ID", client_id)
    return len(ids)


async def test_connections_killed_by_the_server_are_reestablished(polybus_url: str) -> None:
    name = unique_name("victim")
    async with polybus.connect(polybus_url, client_name=name) as broker:
        topic = broker.topic(unique_name("reconnect"))
        async with topic.consumer(unique_name("g")) as consumer, topic.producer() as producer:
            await producer.send_many([f"before-{i}".encode() for i in range(10)])
            before = [await consumer.receive(timeout=5) for _ in range(10)]
            for d in before:
                assert d is not None
                await d.ack()
            waiting = asyncio.create_task(consumer.receive(timeout=10))  # blocked in XREADGROUP
            await asyncio.sleep(0.3)
            assert await _kill_clients(polybus_url, name) >= 2
            await producer.send_many([f"after-{i}".encode() for i in range(10)])
            got = [await waiting] + [await consumer.receive(timeout=10) for _ in range(9)]
            for d in got:
                assert d is not None
                await d.ack()
    assert sorted(d.body for d in got if d is not None) == sorted(f"after-{i}".encode() for i in range(10))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@contextlib.contextmanager
def _redis_server(port: int) -> Iterator[subprocess.Popen[bytes]]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("no redis-server binary to start a private server")
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            time.sleep(0.05)
        yield process
    finally:
        process.terminate()
        process.wait(10)


async def test_send_during_an_outage_succeeds_after_the_server_returns() -> None:
    port = _free_port()
    url = f"redis://127.0.0.1:{port}/0"
    policy = ReconnectPolicy(initial=0.1, maximum=0.5, give_up_after=20)
    with _redis_server(port) as first:
        broker = polybus.connect(url, reconnect=policy)
        async with broker:
            producer = broker.topic("outage").producer()
            await producer.open()
            await producer.send(b"before")
            first.terminate()
            first.wait(10)
            sending = asyncio.create_task(producer.send(b"during"))
            await asyncio.sleep(1.0)
            assert not sending.done()
            with _redis_server(port):
                sent_id = await asyncio.wait_for(sending, 20)
                async with raw_redis.Redis.from_url(url) as client:
                    entries = await client.xrange("outage")
            await producer.aclose()
    assert [e[1][b"body"] for e in entries] == [b"during"]
    assert entries[0][1][b"polybus-id"] == sent_id.encode()


async def test_send_raises_when_the_server_stays_away() -> None:
    port = _free_port()
    policy = ReconnectPolicy(initial=0.1, maximum=0.3, give_up_after=1.5)
    with _redis_server(port) as server:
        async with polybus.connect(f"redis://127.0.0.1:{port}/0", reconnect=policy) as broker:
            producer = broker.topic("gone").producer()
            await producer.open()
            server.terminate()
            server.wait(10)
            started = time.monotonic()
            with pytest.raises(polybus.BrokerConnectionError):
                await producer.send(b"lost?")
            assert time.monotonic() - started < 10
            await producer.aclose()
