"""``TcpRelay``: a TCP relay in front of a broker that a test can cut or take down and bring back.

Resilience tests put it between an adapter and its broker: ``cut()`` drops every connection at
once (as a crashed peer or a broken network would), ``stop()`` also stops listening (an outage),
and ``start()`` listens again on the same port. ``freeze()`` makes every connection half-open: the
sockets stay open but no byte passes in either direction (a peer that vanished without a FIN or
RST: a pulled cable, a dead NAT entry, a frozen VM) until ``thaw()``. No broker access is needed,
so the same test runs against any server. Imports nothing from polybus.
"""

from __future__ import annotations

import asyncio
import contextlib
import urllib.parse
from types import TracebackType
from typing import Self

__all__ = ["TcpRelay"]


class TcpRelay:
    """Relays ``127.0.0.1:port`` to the broker of ``target`` (a URL, or ``host:port``).

    async with TcpRelay(broker_url) as relay:
        async with polybus.connect(relay.url) as broker:
            ...
            relay.cut()
    """

    def __init__(self, target: str, *, port: int = 0) -> None:
        parts = urllib.parse.urlsplit(target if "://" in target else f"tcp://{target}")
        if not parts.hostname or not parts.port:
            raise ValueError(f"the relay needs a host and a port to relay to, got {target!r}")
        self._target = parts
        self.upstream = (parts.hostname, parts.port)
        self.port = port
        """The port the relay listens on (chosen at the first ``start()`` when 0)."""
        self.accepted = 0
        """Connections relayed so far (the upstream side answered)."""
        self.cuts = 0
        self._server: asyncio.Server | None = None
        self._freezing = False
        self._freeze_new = False
        self._gates: set[asyncio.Event] = set()
        """One per connection: set while its bytes flow, cleared while it is frozen."""
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        """``target`` with its host and port replaced by the relay's (user and password kept)."""
        userinfo = self._target.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@127.0.0.1:{self.port}" if userinfo else f"127.0.0.1:{self.port}"
        return self._target._replace(netloc=netloc).geturl()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Listen (again, on the same port after a ``stop()``)."""
        if self._server is None:
            self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)
            self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and drop every connection: an outage until the next ``start()``."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        self.cut()
        if server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 5)

    def cut(self) -> None:
        """Drop every relayed connection now (RST where possible), and keep listening."""
        self.cuts += 1
        for writer in list(self._writers):
            with contextlib.suppress(Exception):
                writer.transport.abort()
        self._writers.clear()

    @property
    def frozen(self) -> bool:
        """True between ``freeze()`` and ``thaw()``."""
        return self._freezing

    def freeze(self, *, new_connections: bool = False) -> None:
        """Make every open connection half-open: stop forwarding bytes, both ways, without closing it.

        Nothing passes until ``thaw()``, not even a close: bytes (and an end of stream) that arrive
        meanwhile are held, up to the sockets' buffers (the sender then sees a full window, as with
        a peer that stopped reading), and forwarded in order on ``thaw()`` unless the connection
        is cut first. Each side sees an open, silent connection, as after a pulled cable, a dead
        NAT entry or a frozen VM; only its own heartbeats or timeouts tell it.

        New connections flow normally (a client that gave up on a frozen connection reconnects
        at once, as through a NAT that lost its old entries), unless ``new_connections`` is true:
        then they are accepted and connected upstream but frozen too (a path that went dark; the
        client's connect succeeds, its handshake stalls).
        """
        self._freezing = True
        self._freeze_new = new_connections
        for gate in self._gates:
            gate.clear()

    def thaw(self) -> None:
        """Forward again what ``freeze()`` held, and all that follows."""
        self._freezing = self._freeze_new = False
        for gate in self._gates:
            gate.set()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.transport.abort()
            return
        self.accepted += 1
        self._writers |= {writer, up_writer}
        gate = asyncio.Event()
        if not self._freeze_new:
            gate.set()
        self._gates.add(gate)
        try:
            await asyncio.gather(self._pipe(reader, up_writer, gate), self._pipe(up_reader, writer, gate))
        finally:
            self._gates.discard(gate)

    @staticmethod
    async def _hold(gate: asyncio.Event, writer: asyncio.StreamWriter) -> bool:
        """While frozen, hold what was read (and read no more); False if the connection was
        dropped meanwhile (a ``cut()`` or ``stop()`` during a freeze ends its pipes)."""
        while not gate.is_set():
            if writer.transport.is_closing():
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(gate.wait(), 0.1)
        return not writer.transport.is_closing()

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, gate: asyncio.Event
    ) -> None:
        try:
            while data := await reader.read(65536):
                if not await self._hold(gate, writer):
                    return
                writer.write(data)
                await writer.drain()
            await self._hold(gate, writer)  # a frozen connection does not pass on its close either
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.transport.abort()
            self._writers.discard(writer)
