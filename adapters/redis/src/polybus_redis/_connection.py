"""Raw round trips on redis-py connections: pipelined commands in, raw RESP2 replies out.

The adapter talks to Redis through redis-py's asyncio ``Connection`` objects directly: redis-py
connects them (TLS, ``AUTH``, ``SELECT``, ``CLIENT SETNAME``), the adapter writes the packed
commands itself and reads the replies with its own parser (``_resp``), error replies returned in
place (so one failing command leaves the connection in sync).

Cancellation is honoured at every await. redis-py wraps its socket writes in
``asyncio.wait_for``, which on Python 3.11 returns normally when a cancellation arrives just as
the write completes (CPython gh-86296): the cancel is lost. So the adapter writes to the stream
itself (no ``wait_for``), and where it still calls redis-py (connecting, and the fallback path
of ``_compat``) it re-raises a cancellation that ``Task.cancelling()`` shows was requested
meanwhile. A caller that passes a :class:`Finisher` (a consumer's blocking link) also keeps its
connection and what the server already sent: after a cancellation it ends the blocking command
with ``CLIENT UNBLOCK``, reads the replies (for at most ``FINISH_GRACE`` seconds), hands them to
the finisher, and only then lets the cancellation go on.

Imports redis-py and this adapter's ``_compat`` and ``_resp`` modules.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any, Protocol

from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ResponseError

from polybus_redis import _compat
from polybus_redis._resp import Replies

__all__ = [
    "FINISH_GRACE",
    "Command",
    "Finisher",
    "Reply",
    "connect",
    "pack",
    "raise_lost_cancel",
    "roundtrip",
]

Command = list[Any] | bytes
"""A command as its arguments (str, bytes or int), or already packed by :func:`pack`."""
Reply = Any
"""A raw RESP2 reply: bytes, int, None, a list of replies, or a ``ResponseError`` in its place."""

READ_MARGIN = 2.0
"""Seconds allowed on top of the socket timeout for a whole pipeline's replies."""
FINISH_GRACE = 0.5
"""Longest a cancelled call waits for the replies of the request it already sent."""


class Finisher(Protocol):
    """What a call needs to finish a request it already sent when it is cancelled."""

    async def unblock(self) -> None:
        """Make the server answer a blocking command under way at once (``CLIENT UNBLOCK``)."""

    def keep(self, replies: list[Reply]) -> None:
        """Take the replies of the cancelled call (entries Redis delivered must not be lost)."""


def pack(command: list[Any]) -> bytes:
    """``command`` in the RESP wire format (a lean equivalent of redis-py's ``pack_command``)."""
    parts = [b"*%d\r\n" % len(command)]
    for arg in command:
        if isinstance(arg, str):
            arg = arg.encode()
        elif isinstance(arg, int):
            arg = b"%d" % arg
        elif not isinstance(arg, bytes):
            arg = str(arg).encode()
        parts += (b"$%d\r\n" % len(arg), arg, b"\r\n")
    return b"".join(parts)


def raise_lost_cancel(task: asyncio.Task[Any] | None, cancels: int) -> None:
    """Raise ``CancelledError`` if ``task`` was cancelled since it had ``cancels`` requests pending.

    After a call into redis-py, whose ``wait_for`` may have swallowed the cancellation (gh-86296).
    """
    if task is not None and task.cancelling() > cancels:
        raise asyncio.CancelledError


async def connect(conn: AbstractConnection) -> None:
    """Connect ``conn`` with redis-py (handshake included), never losing a cancellation."""
    task = asyncio.current_task()
    cancels = task.cancelling() if task is not None else 0
    await conn.connect()  # type: ignore[no-untyped-call]
    raise_lost_cancel(task, cancels)


async def roundtrip(
    conn: AbstractConnection, commands: list[Command], finisher: Finisher | None = None
) -> list[Reply]:
    """Send ``commands`` in one write and read one reply per command (errors kept in place).

    Any failure other than an error reply drops the connection, so that it is never reused
    half-read (redis-py reconnects it on next use); so does a cancellation, unless ``finisher``
    gets the replies within ``FINISH_GRACE`` (see the module docstring).
    """
    in_sync = False
    try:
        if not conn.is_connected:
            await connect(conn)
        packed = [c if isinstance(c, bytes) else pack(c) for c in commands]
        pair = _compat.streams(conn)
        if pair is None:
            return await _public_roundtrip(conn, packed)
        reader, writer = pair
        replies = Replies(len(packed))
        writer.writelines(packed)
        try:
            async with asyncio.timeout((conn.socket_timeout or 0) + READ_MARGIN):
                await writer.drain()
                return await replies.read(reader)
        except asyncio.CancelledError:
            if finisher is not None:
                in_sync = await _finish(reader, replies, finisher)
            raise
    except BaseException:
        if not in_sync:
            await conn.disconnect(nowait=True)
        raise


async def _finish(reader: asyncio.StreamReader, replies: Replies, finisher: Finisher) -> bool:
    """After a cancellation: end the blocking command, read the rest; True if all replies came."""
    try:
        async with asyncio.timeout(FINISH_GRACE):
            await finisher.unblock()
            await replies.read(reader)
    except (Exception, asyncio.CancelledError):  # the caller re-raises the first cancellation
        return False
    finisher.keep(replies.replies)
    return True


async def _public_roundtrip(conn: AbstractConnection, packed: list[bytes]) -> list[Reply]:
    """The same through redis-py's public API (``_compat`` found no stream to use)."""
    task = asyncio.current_task()
    cancels = task.cancelling() if task is not None else 0
    await conn.send_packed_command(packed, check_health=False)
    raise_lost_cancel(task, cancels)
    replies: list[Reply] = []
    async with asyncio.timeout((conn.socket_timeout or 0) + READ_MARGIN):
        for _ in packed:
            try:
                replies.append(await conn.read_response(timeout=math.inf))
            except ResponseError as exc:
                replies.append(exc)
    return replies
