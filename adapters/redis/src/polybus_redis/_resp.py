"""A lean RESP2 reader: parses whole replies from one buffer instead of one await per line.

redis-py's pure-Python parser awaits the stream once per line, which costs more than Redis
itself when a reply holds thousands of stream fields. This reader takes what the socket has,
parses every complete reply synchronously, and reads more only when a reply is incomplete.
Error replies come back as ``ResponseError`` values (``NoScriptError`` for ``NOSCRIPT``), in place.
Imports redis-py's exception classes only.
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.exceptions import ConnectionError, NoScriptError, ResponseError

__all__ = ["Replies"]

CHUNK = 1 << 18


def _error(line: bytes) -> ResponseError:
    text = line.decode(errors="replace")
    return NoScriptError(text) if text.startswith("NOSCRIPT") else ResponseError(text)


class _Parser:
    """Resumable: when the buffer ends mid-reply, parsing continues where it stopped."""

    def __init__(self) -> None:
        self.buf = b""
        self.pos = 0
        self.stack: list[tuple[list[Any], int]] = []  # arrays being filled, with their lengths

    def feed(self, data: bytes) -> None:
        self.buf = self.buf[self.pos :] + data if self.pos < len(self.buf) else data
        self.pos = 0

    def reply(self) -> tuple[bool, Any]:
        """``(True, reply)`` for the next complete reply, or ``(False, None)`` if more data is needed."""
        buf, pos, stack = self.buf, self.pos, self.stack
        while True:
            end = buf.find(b"\r\n", pos)
            if end < 0:
                return False, None
            kind = buf[pos]
            value: Any
            if kind == 36:  # $ bulk string
                length = int(buf[pos + 1 : end])
                if length < 0:
                    value, pos = None, end + 2
                else:
                    stop = end + 2 + length
                    if stop + 2 > len(buf):
                        return False, None
                    value, pos = buf[end + 2 : stop], stop + 2
            elif kind == 42:  # * array
                count = int(buf[pos + 1 : end])
                pos = end + 2
                if count > 0:
                    stack.append(([], count))
                    self.pos = pos
                    continue
                value = None if count < 0 else []
            elif kind == 58:  # : integer
                value, pos = int(buf[pos + 1 : end]), end + 2
            elif kind == 43:  # + simple string
                value, pos = buf[pos + 1 : end], end + 2
            elif kind == 45:  # - error
                value, pos = _error(buf[pos + 1 : end]), end + 2
            else:
                raise ConnectionError(f"protocol error: unexpected reply type {chr(kind)!r}")
            self.pos = pos
            while stack:
                items, count = stack[-1]
                items.append(value)
                if len(items) < count:
                    break
                stack.pop()
                value = items
            else:
                return True, value


class Replies:
    """The replies to ``n`` pipelined commands, read from a stream.

    :meth:`read` can be called again after it was interrupted (cancelled, timed out): it goes on
    where it stopped, so that a caller can still finish reading the replies of a request it sent.
    """

    __slots__ = ("_parser", "n", "replies")

    def __init__(self, n: int) -> None:
        self.n = n
        self.replies: list[Any] = []
        self._parser = _Parser()

    async def read(self, reader: asyncio.StreamReader) -> list[Any]:
        """Read until all ``n`` replies are in (raises ``ConnectionError`` on EOF); return them."""
        replies, parser, n = self.replies, self._parser, self.n
        while len(replies) < n:
            done, value = parser.reply()
            if done:
                replies.append(value)
                continue
            chunk = await reader.read(CHUNK)
            if not chunk:
                raise ConnectionError("Connection closed by server.")
            parser.feed(chunk)
        if parser.pos != len(parser.buf) or parser.stack:
            raise ConnectionError("protocol error: more data than replies")
        return replies
