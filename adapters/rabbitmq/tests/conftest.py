"""Fixtures of the RabbitMQ adapter tests: the broker URL (found or skipped) and a cuttable proxy.

``CutProxy`` sits between a client and RabbitMQ; cutting it closes every proxied socket at once
(what a network failure looks like to the client) while it keeps listening for the reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import urllib.parse
from collections.abc import Iterator

import pytest

from polybus.testing.plugin import broker_url


class CutProxy:
    """``async with CutProxy(url) as proxy``: ``proxy.url`` goes through it; ``proxy.cut()`` drops all."""

    def __init__(self, url: str) -> None:
        self.target = urllib.parse.urlsplit(url)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.cuts = 0
        self.accepted = 0

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        netloc = self.target.netloc.rsplit("@", 1)
        userinfo = netloc[0] + "@" if len(netloc) == 2 else ""
        return self.target._replace(netloc=f"{userinfo}127.0.0.1:{port}").geturl()

    async def __aenter__(self) -> CutProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        self.cut()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 5)

    def cut(self) -> None:
        """Drop every connection now (RST where possible, like a crashed peer)."""
        self.cuts += 1
        for writer in list(self._writers):
            transport = writer.transport
            with contextlib.suppress(Exception):
                transport.abort()
        self._writers.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        host = self.target.hostname or "127.0.0.1"
        port = self.target.port or 5672
        try:
            up_reader, up_writer = await asyncio.open_connection(host, port)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.IncompleteReadError):
                pass
            finally:
                dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers.difference_update((writer, up_writer))


_URLS: list[str] = []


@pytest.fixture(scope="session")
def polybus_url() -> str:
    url = broker_url("rabbitmq")
    _URLS.append(url)
    return url


@pytest.fixture(scope="session", autouse=True)
def _delete_declared_queues() -> Iterator[None]:
    """After the session, delete the group queues and topics the tests declared in this process.

    Quorum queues hold memory on the server even when idle; a local broker should not collect
    hundreds of them over repeated runs.
    """
    yield
    if _URLS:
        asyncio.run(_delete_known(_URLS[0]))


async def _delete_known(url: str) -> None:
    import aio_pika
    from polybus_rabbitmq._topic import _KNOWN_GROUPS
    from polybus_rabbitmq._wire import group_queue_name

    try:
        connection = await aio_pika.connect(url)
    except Exception:
        return
    try:
        for (_, _, _, topic), groups in list(_KNOWN_GROUPS.items()):
            for group in groups:
                with contextlib.suppress(Exception):
                    async with connection.channel() as channel:
                        await channel.queue_delete(group_queue_name(topic, group), if_unused=False)
            with contextlib.suppress(Exception):
                async with connection.channel() as channel:
                    await channel.exchange_delete(topic)
    finally:
        await connection.close()


@pytest.fixture
def cut_proxy() -> type[CutProxy]:
    """The ``CutProxy`` class: ``async with cut_proxy(url) as proxy`` inside the test's event loop."""
    return CutProxy
