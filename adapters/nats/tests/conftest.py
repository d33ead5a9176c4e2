"""Fixtures of the nats adapter's tests: the broker URL, private servers, the contract's knobs.

The shared server (found by the harness) accepts any credentials, so the contract's password case
runs against a private server started with a user and password, on the first time it is asked for.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator

import pytest

from polybus.testing import free_port as a_free_port
from polybus.testing.contract import ContractConfig
from polybus.testing.plugin import broker_url

NATS_SERVER = shutil.which("nats-server") or os.path.join(os.path.dirname(sys.executable), "nats-server")
HAVE_SERVER = os.path.exists(NATS_SERVER)


class OwnServer:
    """A nats-server a test starts (and restarts) on a port of its own."""

    def __init__(self, *args: str) -> None:
        self.port = a_free_port()
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
def free_port() -> int:
    """A local port nothing listens on."""
    return a_free_port()


@pytest.fixture
def nats_server() -> Iterator[Callable[..., OwnServer]]:
    """``nats_server("--user", "alice", ...)``: a started private server, stopped after the test."""
    if not HAVE_SERVER:
        pytest.skip("no nats-server binary")
    started: list[OwnServer] = []

    def start(*args: str) -> OwnServer:
        server = OwnServer(*args)
        started.append(server)
        server.start()
        return server

    yield start
    for server in started:
        server.stop()


class _PasswordServer:
    """A private server that checks a password, started when a URL for it is first asked for."""

    def __init__(self) -> None:
        self.server: OwnServer | None = None

    def url(self, _url: str, password: str) -> str | None:
        if not HAVE_SERVER:
            pytest.skip("no nats-server binary to start a server that checks passwords")
        if self.server is None:
            self.server = OwnServer("--user", "alice", "--pass", "the-right-one")
            self.server.start()
        return f"nats://alice:{password}@127.0.0.1:{self.server.port}"


@pytest.fixture(scope="session")
def polybus_url() -> str:
    return broker_url("nats")


@pytest.fixture(scope="session")
def polybus_contract_config() -> Iterator[ContractConfig]:
    """A one-second ``ack_wait`` is the lease; the password case goes to a server that checks one."""
    passwords = _PasswordServer()
    yield ContractConfig(lease=1.0, lease_options={"ack_wait": 1}, password_url=passwords.url)
    if passwords.server is not None:
        passwords.server.stop()
