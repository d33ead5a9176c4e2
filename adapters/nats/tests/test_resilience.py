"""A server restart (with and without nats-py's reconnect switch) and TLS, on private nats-servers
(see conftest.py). A killed consumer and a wrong password are contract cases."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from typing import Any

import pytest

import polybus
from polybus.testing import unique_name


@pytest.fixture
def own_server(nats_server: Callable[..., Any]) -> Any:
    return nats_server()


@pytest.mark.polybus(timeout=90)
async def test_sends_during_a_server_restart_are_stored_or_raise(own_server: Any) -> None:
    url = f"nats://127.0.0.1:{own_server.port}"
    async with polybus.connect(url) as broker:
        topic = broker.topic(unique_name("restart"))
        async with topic.consumer("g") as consumer, topic.producer() as producer:
            await producer.send(b"before")
            own_server.kill()

            async def restart_later() -> None:
                await asyncio.sleep(1.5)
                own_server.start()

            restarting = asyncio.create_task(restart_later())
            # sent while the server is down: each either succeeds after the reconnect or raises
            outcomes = await asyncio.gather(
                *(producer.send(f"during-{i}".encode()) for i in range(5)), return_exceptions=True
            )
            await restarting
            confirmed = {f"during-{i}".encode() for i, r in enumerate(outcomes) if isinstance(r, str)}
            failed = [r for r in outcomes if not isinstance(r, str)]
            assert all(isinstance(r, polybus.PolybusError) for r in failed), failed
            assert confirmed, f"no send survived the restart: {failed}"
            await producer.send(b"after")
            got: set[bytes] = set()
            deadline = time.monotonic() + 30
            while not {b"before", b"after", *confirmed} <= got and time.monotonic() < deadline:
                d = await consumer.receive(timeout=1)
                if d is not None:
                    got.add(d.body)
                    await d.ack()
        assert {b"before", b"after", *confirmed} <= got


async def _send_through_a_restart(broker: polybus.Broker, server: Any) -> None:
    """Kill and restart ``server``: the broker's connection comes back and a send goes through."""
    topic = broker.topic(unique_name("back"))
    async with topic.consumer("g") as consumer, topic.producer() as producer:
        await producer.send(b"before")
        server.kill()
        await asyncio.sleep(0.5)
        server.start()
        await asyncio.wait_for(producer.send(b"after"), 30)
        got: list[bytes] = []
        while len(got) < 2 and (d := await consumer.receive(timeout=10)) is not None:
            got.append(d.body)
            await d.ack()
    assert got == [b"before", b"after"]


@pytest.mark.polybus(timeout=90)
async def test_the_installed_nats_py_has_the_reconnect_switch(own_server: Any) -> None:
    """The primary path of ``_compat.enable_reconnect``: if a nats-py upgrade breaks it, this fails."""
    from polybus_nats import NatsBroker, _compat

    async with polybus.connect(f"nats://127.0.0.1:{own_server.port}") as broker:
        assert isinstance(broker, NatsBroker)
        assert all(broker.nc.options.get(key) == value for key, value in _compat.RECONNECT_FOREVER.items())
        assert _compat.enable_reconnect(broker.nc)
        await _send_through_a_restart(broker, own_server)


@pytest.mark.polybus(timeout=90)
async def test_without_the_reconnect_switch_the_broker_still_reconnects(
    own_server: Any, free_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fallback of ``_compat.enable_reconnect``: a second connection, reconnecting from the start."""
    from polybus_nats import _compat

    monkeypatch.setattr(_compat, "_SWITCHES", ("allow_reconnect", "a_key_this_nats_py_lacks"))
    async with polybus.connect(f"nats://127.0.0.1:{own_server.port}") as broker:
        await _send_through_a_restart(broker, own_server)
    # the first connect still fails at once when nobody listens
    with pytest.raises(polybus.BrokerConnectionError):
        async with polybus.connect(f"nats://127.0.0.1:{free_port}?connect_timeout=1") as nobody:
            await nobody.topic("t").ensure()


def _self_signed(directory: str) -> tuple[str, str]:
    cert, key = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", key, "-out", cert],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.mark.polybus(timeout=60)
async def test_tls_url_connects_with_the_given_ca_and_refuses_an_unknown_server(
    nats_server: Callable[..., Any],
) -> None:
    if not shutil.which("openssl"):
        pytest.skip("needs openssl")
    certs = tempfile.mkdtemp(prefix="polybus-nats-tls-")
    cert, key = _self_signed(certs)
    server = nats_server("--tls", "--tlscert", cert, "--tlskey", key)
    try:
        async with polybus.connect(f"tls://127.0.0.1:{server.port}?tls_ca_file={cert}") as broker:
            topic = broker.topic(unique_name("tls"))
            async with topic.consumer("g") as consumer, topic.producer() as producer:
                await producer.send(b"encrypted")
                d = await consumer.receive(timeout=10)
                assert d is not None and d.body == b"encrypted"
                await d.ack()
        # without the CA the self-signed server is not trusted
        with pytest.raises(polybus.BrokerConnectionError):
            async with polybus.connect(f"tls://127.0.0.1:{server.port}?connect_timeout=2") as untrusted:
                await untrusted.topic("t").ensure()
    finally:
        shutil.rmtree(certs, ignore_errors=True)


def test_pings_bound_how_long_a_half_open_connection_goes_unnoticed() -> None:
    from polybus_nats import NatsSettings

    settings = NatsSettings.from_url("nats://h:4222")
    # nats-py's own defaults (120 s, 2) would notice a silent connection only after up to 6 minutes
    assert settings.ping_interval * (settings.max_outstanding_pings + 1) <= 30
    tuned = NatsSettings.from_url("nats://h:4222?ping_interval=0.5&max_outstanding_pings=3")
    assert (tuned.ping_interval, tuned.max_outstanding_pings) == (0.5, 3)


@pytest.mark.polybus(timeout=60)
async def test_a_half_open_connection_is_dropped_and_reconnected(own_server: Any) -> None:
    """The relay freezes the connection (open, silent): the pings go unanswered, the client drops
    it and reconnects, and a send goes through, all before the freeze ends."""
    from polybus.testing import RelayFaults

    async with RelayFaults(f"nats://127.0.0.1:{own_server.port}") as faults:
        url = faults.url + "?ping_interval=0.5&max_outstanding_pings=2"
        async with polybus.connect(url) as broker:
            topic = broker.topic(unique_name("half-open"))
            async with topic.producer() as producer:
                await producer.send(b"before")
                before = faults.relay.accepted
                await faults.freeze()
                started = time.monotonic()
                await producer.send(b"during")  # retried on the new connection, same id
                assert faults.relay.accepted > before
                assert time.monotonic() - started < 15
                assert faults.relay.frozen  # recovered by itself, not by a thaw
                await faults.thaw()
            await topic.delete()
