"""Translation of aio-pika / aiormq / pamqp exceptions into the polybus error tree.

Every call into the client library goes through :func:`translating` (or :func:`translate`), so that
no client exception escapes the adapter. Messages never contain the password: they are built from
the redacted URL, and the password is replaced by ``***`` in the client's own text.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import aiormq.exceptions as amqp_errors
import pamqp.exceptions

from polybus import (
    BrokerConnectionError,
    ConfigurationError,
    NotFoundError,
    OperationTimeout,
    PolybusError,
    PublishError,
)

__all__ = ["CONNECTION_ERRORS", "translate", "translating"]

CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    amqp_errors.AMQPError,
    amqp_errors.ChannelInvalidStateError,
    pamqp.exceptions.PAMQPException,
    RuntimeError,  # aiormq raises it for operations on a connection that just closed
    ConnectionError,
    OSError,
    TimeoutError,
)
"""Exceptions the client stack raises; everything else is a bug and propagates unchanged."""


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) < 300 else text[:300] + "..."


def translate(exc: BaseException, what: str, where: str, secret: str | None = None) -> PolybusError:
    """The polybus error for a client-library ``exc`` raised while doing ``what`` on ``where``.

    ``where`` is a redacted URL; ``secret`` (the password) is scrubbed from the message.
    """
    if isinstance(exc, PolybusError):
        return exc
    reason = _reason(exc)
    if secret:
        reason = reason.replace(secret, "***")
    message = f"{what} on {where} failed: {type(exc).__name__}: {reason}"
    error: PolybusError
    if isinstance(exc, amqp_errors.ChannelNotFoundEntity):
        error = NotFoundError(message)
    elif isinstance(exc, amqp_errors.ChannelPreconditionFailed | amqp_errors.ChannelAccessRefused):
        # an existing object with other arguments, or no permission on it: retrying cannot help
        error = ConfigurationError(message)
    elif isinstance(exc, amqp_errors.DeliveryError):
        error = PublishError(message)
    elif isinstance(exc, TimeoutError | asyncio.TimeoutError):
        error = OperationTimeout(message)
    elif isinstance(exc, amqp_errors.ProbableAuthenticationError | amqp_errors.AuthenticationError):
        error = BrokerConnectionError(f"{what} on {where} failed: authentication refused")
    else:
        error = BrokerConnectionError(message)
    return error


@contextlib.contextmanager
def translating(what: str, where: str, secret: str | None = None) -> Iterator[None]:
    """Re-raise client-library exceptions inside the block as polybus errors (``from`` the original)."""
    try:
        yield
    except PolybusError:
        raise
    except CONNECTION_ERRORS as exc:
        raise translate(exc, what, where, secret) from exc
