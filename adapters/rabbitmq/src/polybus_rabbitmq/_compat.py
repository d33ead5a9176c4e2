"""Every use of aio-pika / aiormq beyond their abstract interfaces, each with a fallback.

The adapter reads a few things the client libraries' ``abc`` modules do not promise: the server's
version (on the aiormq connection under aio-pika's ``transport``), whether that aiormq connection is
still open, and aiormq's ``wait=False`` keyword of ``basic_publish`` (send without draining the
socket buffer per message). They live here, so that a client upgrade that removes one is met by a
fallback that keeps the adapter correct (if slower), and ``tests/test_compat.py`` forces each fallback.

Also here: aiormq logs an error line of its own when a connection cannot be made, a failure the
adapter handles (it raises ``BrokerConnectionError`` or retries with a warning); that line is
dropped (:func:`quiet_handled_errors`), as it could quote more than the adapter's redacted messages.
Imports aiormq only.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any

import aiormq

__all__ = [
    "PUBLISH_NO_DRAIN",
    "no_drain_options",
    "quiet_handled_errors",
    "server_version",
    "transport_alive",
]


def no_drain_options(basic_publish: Callable[..., Any]) -> dict[str, Any]:
    """Keyword options that make ``basic_publish`` skip the per-message drain, where it has one."""
    try:
        parameters = inspect.signature(basic_publish).parameters
    except (TypeError, ValueError):
        return {}
    return {"wait": False} if "wait" in parameters else {}


PUBLISH_NO_DRAIN: dict[str, Any] = no_drain_options(aiormq.Channel.basic_publish)
"""``{"wait": False}`` on aiormq versions that have it (7.x), else ``{}`` (each publish drains)."""


def server_version(connection: Any) -> tuple[int, ...]:
    """The RabbitMQ version an aio-pika connection reports, as numbers; ``()`` when it cannot tell.

    ``()`` makes the adapter assume a current server (quorum queues under ``queue_type=auto``).
    """
    underlay = getattr(getattr(connection, "transport", None), "connection", None)
    properties = getattr(underlay, "server_properties", None)
    if not isinstance(properties, dict):
        return ()
    version = properties.get("version", "")
    if isinstance(version, bytes):
        version = version.decode(errors="replace")
    return tuple(int(part) for part in str(version).split(".")[:3] if part.isdigit())


def transport_alive(connection: Any) -> bool:
    """False when the aiormq connection under an aio-pika one is known to be closed or gone.

    aio-pika learns of a lost connection a little after aiormq does. True when the underlying
    connection cannot be inspected: then aio-pika's own ``is_closed`` decides alone.
    """
    if not hasattr(connection, "transport"):
        return True
    transport = connection.transport
    if transport is None:  # aio-pika drops it when the connection closes
        return False
    closed = getattr(getattr(transport, "connection", None), "is_closed", None)
    return not closed if isinstance(closed, bool) else True


_TRANSPORT_ERROR = "error when creating transport: %r"
"""aiormq's log message (logger ``aiormq.connection``) for a connection that could not be made."""


class _DropHandledErrors(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg != _TRANSPORT_ERROR


_DROP = _DropHandledErrors()


def quiet_handled_errors() -> None:
    """Drop aiormq's error line for a failed connect (idempotent): the adapter reports it itself."""
    logger = logging.getLogger("aiormq.connection")
    if _DROP not in logger.filters:
        logger.addFilter(_DROP)
