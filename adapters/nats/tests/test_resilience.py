"""A killed consumer process, a server restart (with and without nats-py's reconnect switch), and
credentials on a failed connect."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator

import pytest

import polybus
from polybus.testing import unique_name

NATS_SERVER = shutil.which("nats-server") or os.path.join(os.path.dirname(sys.executable), "nats-server")
HAVE_SERVER = os.path.exists(NATS_SERVER)

HOLDER = textwrap.dedent(
    """
    import asyncio, sys
    import polybus

    async def main(url, topic, group):
        async with polybus.connect(url) as broker:
            async with broker.topic(topic).consumer(group) as consumer:
                held = []
                while len(held) < 3:
                    d = await consumer.receive(timeout=10)
                    if d is None:
                        sys.exit(2)
                    held.append(d)
                print("held", flush=True)
                await asyncio.sleep(3600)  # never acks: killed here

    asyncio.run(main(*sys.argv[1:]))
    """
)


@pytest.mark.polybus(timeout=90)
async def test_deliveries_held_by_a_killed_process_come_back(polybus_url: str) -> None:
    url = polybus_url + ("&" if "?" in polybus_url else "?") + "ack_wait=2"
    group = unique_name("g")
    async with polybus.connect(url) as broker:
        topic = broker.topic(unique_name("killed"))
        try:
            async with topic.consumer(group):
                pass  # the group exists before the sends
            async with topic.producer() as producer:
                await producer.send_many([b"1", b"2", b"3"])
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-c", HOLDER, url, topic.name, group, stdout=subprocess.PIPE
            )
            try:
                assert proc.stdout is not None
                line = await asyncio.wait_for(proc.stdout.readline(), 30)
                assert line.strip() == b"held", line
            finally:
                proc.send_signal(signal.SIGKILL)
                await proc.wait()
            assert proc.returncode == -signal.SIGKILL
            async with topic.consumer(group) as survivor:
                got = []
                deadline = time.monotonic() + 30
                while len(got) < 3 and time.monotonic() < deadline:
                    d = await survivor.receive(timeout=1)
                    if d is not None:
                        got.append(d)
                        await d.ack()
            assert sorted(d.body for d in got) == [b"1", b"2", b"3"]
            assert all(d.attempt == 2 for d in got)
        finally:
            await topic.delete()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


class OwnServer:
    """A nats-server this test starts (and restarts) on a port of its own."""

    def __init__(self, *args: str) -> None:
        self.port = _free_port()
        self.store = tempfile.mkdtemp(prefix="polybus-nats-")
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [NATS_SERVER, "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", self.store, *self.args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("nats-server did not start")

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
            self.proc = None

    def stop(self) -> None:
        self.kill()
        shutil.rmtree(self.store, ignore_errors=True)


@pytest.fixture
def own_server() -> Iterator[OwnServer]:
    if not HAVE_SERVER:
        pytest.skip("no nats-server binary")
    server = OwnServer()
    server.start()
    yield server
    server.stop()


@pytest.mark.polybus(timeout=90)
async def test_sends_during_a_server_restart_are_stored_or_raise(own_server: OwnServer) -> None:
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


async def _send_through_a_restart(broker: polybus.Broker, server: OwnServer) -> None:
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
async def test_the_installed_nats_py_has_the_reconnect_switch(own_server: OwnServer) -> None:
    """The primary path of ``_compat.enable_reconnect``: if a nats-py upgrade breaks it, this fails."""
    from polybus_nats import NatsBroker, _compat

    async with polybus.connect(f"nats://127.0.0.1:{own_server.port}") as broker:
        assert isinstance(broker, NatsBroker)
        assert all(broker.nc.options.get(key) == value for key, value in _compat.RECONNECT_FOREVER.items())
        assert _compat.enable_reconnect(broker.nc)
        await _send_through_a_restart(broker, own_server)


@pytest.mark.polybus(timeout=90)
async def test_without_the_reconnect_switch_the_broker_still_reconnects(
    own_server: OwnServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fallback of ``_compat.enable_reconnect``: a second connection, reconnecting from the start."""
    from polybus_nats import _compat

    monkeypatch.setattr(_compat, "_SWITCHES", ("allow_reconnect", "a_key_this_nats_py_lacks"))
    async with polybus.connect(f"nats://127.0.0.1:{own_server.port}") as broker:
        await _send_through_a_restart(broker, own_server)
    # the first connect still fails at once when nobody listens
    with pytest.raises(polybus.BrokerConnectionError):
        async with polybus.connect(f"nats://127.0.0.1:{_free_port()}?connect_timeout=1") as nobody:
            await nobody.topic("t").ensure()


@pytest.mark.polybus(timeout=60)
async def test_wrong_password_raises_connection_error_and_never_shows_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    if not HAVE_SERVER:
        pytest.skip("no nats-server binary")
    server = OwnServer("--user", "alice", "--pass", "right-password")
    server.start()
    canary = "Canary-Pw-b81c5"
    try:
        caplog.set_level(logging.DEBUG)
        broker = polybus.connect(f"nats://alice:{canary}@127.0.0.1:{server.port}")
        assert canary not in repr(broker)
        with pytest.raises(polybus.BrokerConnectionError) as info:
            async with broker:
                await broker.topic("t").ensure()
        chain: BaseException | None = info.value
        while chain is not None:
            assert canary not in str(chain) and canary not in repr(chain)
            chain = chain.__cause__ or chain.__context__
        assert canary not in caplog.text
        async with polybus.connect(f"nats://alice:right-password@127.0.0.1:{server.port}") as good:
            topic = good.topic(unique_name("auth"))
            await topic.ensure()
            assert "right-password" not in repr(good)
    finally:
        server.stop()


def _self_signed(directory: str) -> tuple[str, str]:
    cert, key = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", key, "-out", cert],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.mark.polybus(timeout=60)
async def test_tls_url_connects_with_the_given_ca_and_refuses_an_unknown_server() -> None:
    if not HAVE_SERVER or not shutil.which("openssl"):
        pytest.skip("needs nats-server and openssl")
    certs = tempfile.mkdtemp(prefix="polybus-nats-tls-")
    cert, key = _self_signed(certs)
    server = OwnServer("--tls", "--tlscert", cert, "--tlskey", key)
    server.start()
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
        server.stop()
        shutil.rmtree(certs, ignore_errors=True)
