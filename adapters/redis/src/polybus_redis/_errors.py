"""Translation of redis-py exceptions into the polybus error tree, at the adapter's boundary.

``translate(exc, ...)`` returns the polybus error to raise ``from exc``; :class:`ConnectionLost`
marks the transient failures (connection refused, dropped, timed out) that the adapter retries
with its :class:`~polybus.ReconnectPolicy`. Every message is scrubbed of the password.
Imports ``polybus`` (the public error classes) and redis-py only.
"""

from __future__ import annotations

import redis.exceptions as rex

from polybus import (
    BrokerConnectionError,
    ConfigurationError,
    NotFoundError,
    PolybusError,
    PublishError,
)

__all__ = ["ConnectionLost", "translate"]


class ConnectionLost(BrokerConnectionError):
    """The connection to Redis failed or dropped; the operation may succeed after reconnecting."""


def translate(exc: BaseException, *, what: str, where: str, secret: str | None = None) -> PolybusError:
    """The polybus error for ``exc`` raised while doing ``what`` against ``where`` (a redacted URL)."""
    if isinstance(exc, PolybusError):
        return exc
    text = _scrub(f"{type(exc).__name__}: {exc}", secret)
    if isinstance(exc, rex.AuthenticationError | rex.AuthenticationWrongNumberOfArgsError):
        return BrokerConnectionError(f"{what}: {where} refused the credentials ({text})")
    if isinstance(exc, rex.ConnectionError | rex.TimeoutError | OSError | EOFError):
        return ConnectionLost(f"{what}: lost or could not reach {where} ({text})")
    if isinstance(exc, rex.ResponseError):
        message = str(exc)
        if message.startswith("NOGROUP") or "no such key" in message:
            return NotFoundError(f"{what}: the stream or group does not exist on {where} ({text})")
        if message.startswith("WRONGTYPE"):
            return ConfigurationError(f"{what}: the key exists on {where} but is not a stream ({text})")
        if message.startswith(("NOAUTH", "WRONGPASS", "NOPERM")):
            return BrokerConnectionError(f"{what}: {where} refused the credentials ({text})")
        if what.startswith("send"):
            return PublishError(f"{what}: {where} refused it ({text})")
    return PolybusError(f"{what}: {where} failed ({text})")


def _scrub(text: str, secret: str | None) -> str:
    if secret:
        text = text.replace(secret, "***")
    return text
