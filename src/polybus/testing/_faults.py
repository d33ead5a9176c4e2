"""``FaultInjector``: what the contract suite needs to break the path to a broker, and its default.

A resilience case connects through ``injector.url`` and then drops every connection (``cut()``) or
takes the broker away for a while (``stop()`` ... ``start()``). The default, :class:`RelayFaults`,
puts a :class:`~polybus.testing.TcpRelay` in front of the URL's host and port; a broker whose
clients do not stay behind a relay (Kafka clients connect to the addresses the cluster
advertises) supplies its own injector through the ``polybus_faults`` fixture
(:class:`~polybus.testing.TansuRelayFaults` does it for a private tansu). ``RelayFaults`` also
makes connections half-open (``freeze()`` ... ``thaw()``). Imports nothing from polybus but the relay.
"""

from __future__ import annotations

import urllib.parse
from types import TracebackType
from typing import Protocol, Self, runtime_checkable

from polybus.testing._relay import TcpRelay

__all__ = ["FaultInjector", "RelayFaults"]


@runtime_checkable
class FaultInjector(Protocol):
    """Breaks the connections between an adapter and its broker on demand.

    Enter it (``async with injector:``) in the test's event loop, connect to ``injector.url``,
    then inject faults. Leaving it ends any outage and releases what it holds.
    """

    @property
    def url(self) -> str:
        """The broker URL to connect through (valid once entered)."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    async def cut(self) -> None:
        """Drop every connection made through ``url`` at once; new connections succeed."""
        ...

    async def stop(self) -> None:
        """Start an outage: drop every connection and refuse new ones until ``start()``."""
        ...

    async def start(self) -> None:
        """End an outage: accept connections again, at the same ``url``."""
        ...


class RelayFaults:
    """A :class:`FaultInjector` made of a :class:`TcpRelay` in front of ``target``'s host and port.

    ``url`` is ``target`` with the relay's address (user, password, path and options kept).
    ``port`` fixes the port the relay listens on (0: any free port).
    """

    def __init__(self, target: str, *, port: int = 0) -> None:
        self.relay = TcpRelay(target, port=port)
        """The relay (its ``accepted`` and ``cuts`` counters tell what happened)."""

    @classmethod
    def in_front_of(cls, url: str) -> RelayFaults | None:
        """An injector for ``url``, or ``None`` when the URL names no host and port to relay to."""
        try:
            parts = urllib.parse.urlsplit(url)
            has_address = bool(parts.hostname and parts.port)
        except ValueError:
            return None
        return cls(url) if has_address else None

    @property
    def url(self) -> str:
        return self.relay.url

    async def __aenter__(self) -> Self:
        await self.relay.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.relay.stop()

    async def cut(self) -> None:
        self.relay.cut()

    async def stop(self) -> None:
        await self.relay.stop()

    async def start(self) -> None:
        await self.relay.start()

    async def freeze(self, *, new_connections: bool = False) -> None:
        """Make every open connection half-open until ``thaw()``: open, but not a byte (nor a
        close) passes. New connections flow, unless ``new_connections`` (then they are accepted
        but frozen too). See :meth:`TcpRelay.freeze`."""
        self.relay.freeze(new_connections=new_connections)

    async def thaw(self) -> None:
        """End a ``freeze()``: the bytes held are forwarded, in order, and traffic flows again."""
        self.relay.thaw()

    def __repr__(self) -> str:
        return (
            f"RelayFaults(127.0.0.1:{self.relay.port} -> {self.relay.upstream[0]}:{self.relay.upstream[1]})"
        )
