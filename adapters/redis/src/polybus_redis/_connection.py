"""Raw round trips on redis-py connections: pipelined commands in, raw RESP2 replies out.

The adapter talks to Redis through redis-py's asyncio ``Connection`` objects directly: commands
are packed and written together, replies read in order, error replies returned in place (so one
failing command leaves the connection in sync). :class:`BlockingLink` is a consumer's own
connection for blocking reads, which ``CLIENT UNBLOCK`` can cut short when the consumer closes.
Imports redis-py only.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ResponseError

from polybus_redis._resp import read_replies

__all__ = ["Command", "Reply", "pack", "roundtrip"]

Command = list[Any] | bytes
"""A command as its arguments (str, bytes or int), or already packed by :func:`pack`."""
Reply = Any
"""A raw RESP2 reply: bytes, int, None, a list of replies, or a ``ResponseError`` in its place."""

READ_MARGIN = 2.0
"""Seconds allowed on top of the socket timeout for a whole pipeline's replies."""


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


async def roundtrip(conn: AbstractConnection, commands: list[Command]) -> list[Reply]:
    """Send ``commands`` in one write and read one reply per command (errors kept in place).

    Any failure other than an error reply drops the connection, so that it is never reused
    half-read; redis-py reconnects it on next use.
    """
    try:
        if not conn.is_connected:
            await conn.connect()  # type: ignore[no-untyped-call]
        await conn.send_packed_command(
            [c if isinstance(c, bytes) else pack(c) for c in commands], check_health=False
        )
        reader = getattr(conn, "_reader", None)
        async with asyncio.timeout((conn.socket_timeout or 0) + READ_MARGIN):
            if isinstance(reader, asyncio.StreamReader):
                replies = await read_replies(reader, len(commands))
            else:  # not a stream connection: let redis-py parse
                replies = []
                for _ in commands:
                    try:
                        replies.append(await conn.read_response(timeout=math.inf))
                    except ResponseError as exc:
                        replies.append(exc)
        return replies
    except BaseException:
        await conn.disconnect(nowait=True)
        raise
