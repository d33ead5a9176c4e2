"""Settings, secrets, and a Redis server that restarts empty while a send waits for it.

A wrong password, cut connections and an outage past the reconnect policy are contract cases.
"""

from __future__ import annotations

import asyncio
import contextlib
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
from polybus.testing import free_port

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
    port = free_port()
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
