"""The test kit's fault injector and URL helpers, against a small echo server (no broker needed)."""

from __future__ import annotations

import asyncio

import pytest

from polybus.testing import FaultInjector, RelayFaults, with_options
from polybus.testing._urls import password_in_userinfo


def test_with_options_adds_and_replaces_query_options() -> None:
    assert with_options("redis://h:1/0") == "redis://h:1/0"
    url = with_options("sqs://k:s@h:1?region=x&fifo=false", fifo=True, visibility_timeout=2)
    assert url == "sqs://k:s@h:1?region=x&fifo=true&visibility_timeout=2"


def test_password_goes_into_the_userinfo() -> None:
    assert password_in_userinfo("amqp://guest:guest@h:5672/", "pw") == "amqp://guest:pw@h:5672/"
    assert password_in_userinfo("redis://h:6379/0", "p/w") == "redis://polybus:p%2Fw@h:6379/0"
    assert password_in_userinfo("memory://", "pw") is None


def test_a_relay_needs_a_host_and_a_port() -> None:
    assert RelayFaults.in_front_of("memory://") is None
    assert RelayFaults.in_front_of("amqp://h") is None
    faults = RelayFaults.in_front_of("amqp://u:p@h:5672/v?x=1")
    assert isinstance(faults, FaultInjector)
    assert faults.relay.upstream == ("h", 5672)


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(1024):
        writer.write(data)
        await writer.drain()
    writer.close()


async def _roundtrip(url_port: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", url_port)
    writer.write(b"ping")
    await writer.drain()
    data = await asyncio.wait_for(reader.read(4), 5)
    writer.close()
    return data


async def test_cut_drops_connections_and_stop_refuses_new_ones_until_start() -> None:
    server = await asyncio.start_server(_echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server, RelayFaults(f"tcp://user:pw@127.0.0.1:{port}/path?o=1") as faults:
        relayed = faults.relay.port
        assert faults.url == f"tcp://user:pw@127.0.0.1:{relayed}/path?o=1"
        reader, writer = await asyncio.open_connection("127.0.0.1", relayed)
        writer.write(b"ping")
        assert await asyncio.wait_for(reader.read(4), 5) == b"ping"
        await faults.cut()
        try:
            after_cut = await asyncio.wait_for(reader.read(4), 5)
        except ConnectionError:
            after_cut = b""  # reset rather than closed
        assert after_cut == b""  # dropped
        writer.close()
        assert await _roundtrip(relayed) == b"ping"  # new connections are accepted
        await faults.stop()
        with pytest.raises(OSError):
            await _roundtrip(relayed)
        await faults.start()
        assert await _roundtrip(relayed) == b"ping"  # on the same port
        assert faults.relay.accepted == 3 and faults.relay.cuts >= 2


async def test_freeze_holds_bytes_without_closing_and_thaw_delivers_them() -> None:
    server = await asyncio.start_server(_echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server, RelayFaults(f"tcp://127.0.0.1:{port}") as faults:
        relayed = faults.relay.port
        reader, writer = await asyncio.open_connection("127.0.0.1", relayed)
        writer.write(b"ping")
        assert await asyncio.wait_for(reader.read(4), 5) == b"ping"
        await faults.freeze(new_connections=True)
        assert faults.relay.frozen
        writer.write(b"held")
        await writer.drain()
        with pytest.raises(TimeoutError):  # half-open: nothing comes back, yet nothing is closed
            await asyncio.wait_for(reader.read(4), 0.5)
        assert not reader.at_eof() and not writer.is_closing()
        # a new connection is accepted but frozen too
        reader2, writer2 = await asyncio.open_connection("127.0.0.1", relayed)
        writer2.write(b"new!")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader2.read(4), 0.5)
        await faults.thaw()
        assert not faults.relay.frozen
        assert await asyncio.wait_for(reader.readexactly(4), 5) == b"held"  # held, then delivered in order
        assert await asyncio.wait_for(reader2.readexactly(4), 5) == b"new!"
        writer.write(b"more")
        assert await asyncio.wait_for(reader.readexactly(4), 5) == b"more"
        writer.close()
        writer2.close()
        assert faults.relay.accepted == 2


async def test_by_default_a_freeze_spares_new_connections_and_holds_a_close() -> None:
    ended: asyncio.Queue[None] = asyncio.Queue()  # one item per connection the server saw closed

    async def echo_until_closed(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _echo(reader, writer)
        ended.put_nowait(None)

    server = await asyncio.start_server(echo_until_closed, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server, RelayFaults(f"tcp://127.0.0.1:{port}") as faults:
        reader, writer = await asyncio.open_connection("127.0.0.1", faults.relay.port)
        writer.write(b"ping")
        assert await asyncio.wait_for(reader.read(4), 5) == b"ping"  # relayed: the connection is up
        await faults.freeze()
        writer.write(b"lost")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.read(4), 0.5)
        assert await _roundtrip(faults.relay.port) == b"ping"  # a new connection flows
        await asyncio.wait_for(ended.get(), 5)  # and its close reaches the server
        writer.close()  # the client gives up on the frozen connection: the server does not hear of it
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(ended.get(), 0.5)
        await faults.thaw()
        await asyncio.wait_for(ended.get(), 5)  # the held close arrives with the thaw


async def test_a_cut_or_stop_during_a_freeze_drops_the_frozen_connections() -> None:
    server = await asyncio.start_server(_echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server, RelayFaults(f"tcp://127.0.0.1:{port}") as faults:
        reader, writer = await asyncio.open_connection("127.0.0.1", faults.relay.port)
        writer.write(b"ping")
        assert await asyncio.wait_for(reader.read(4), 5) == b"ping"  # relayed: the connection is up
        await faults.freeze()
        writer.write(b"held")
        await asyncio.sleep(0.2)
        await faults.cut()
        try:
            after_cut = await asyncio.wait_for(reader.read(4), 5)
        except ConnectionError:
            after_cut = b""
        assert after_cut == b""  # dropped, the held bytes with it
        writer.close()
        await faults.thaw()
        assert await _roundtrip(faults.relay.port) == b"ping"
