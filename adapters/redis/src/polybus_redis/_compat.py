"""The one place the adapter touches redis-py beyond its public API.

The adapter writes its pipelines to redis-py's asyncio ``Connection`` and reads the replies with
its own parser (``_resp``), through the connection's stream reader and writer. redis-py keeps those
in the private attributes ``_reader`` and ``_writer``; :func:`streams` reads them, and answers
``None`` when a redis-py release no longer has them (or the connection is not a stream
connection). The caller then falls back to redis-py's public ``send_packed_command`` /
``read_response``, which is slower and less careful with cancellation (see ``_connection``).
``tests/test_redis_compat.py`` checks that the installed redis-py still takes the fast path, so an
upgrade that changes these internals fails a test instead of silently slowing production down,
and forces the fallback to prove it works.

Imports redis-py's connection class only (for typing).
"""

from __future__ import annotations

import asyncio
import logging

from redis.asyncio.connection import AbstractConnection

__all__ = ["streams"]

log = logging.getLogger("polybus.redis")

_warned = False


def streams(conn: AbstractConnection) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
    """The connected ``conn``'s stream reader and writer, or ``None`` where redis-py hides them."""
    reader = getattr(conn, "_reader", None)
    writer = getattr(conn, "_writer", None)
    if isinstance(reader, asyncio.StreamReader) and isinstance(writer, asyncio.StreamWriter):
        return reader, writer
    _warn_once(conn)
    return None


def _warn_once(conn: AbstractConnection) -> None:
    global _warned
    if not _warned:
        _warned = True
        log.warning(
            "redis-py's %s has no stream reader/writer the adapter can use; falling back to its "
            "public (slower) command API",
            type(conn).__name__,
        )
