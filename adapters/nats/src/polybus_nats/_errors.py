"""Translation of nats-py exceptions into the polybus error tree, at the adapter's boundary.

``translate(exc, what)`` maps one client exception to a :class:`~polybus.PolybusError`;
``boundary(what)`` is a context manager that does it for a block. Messages never carry
credentials: nats-py is given servers without userinfo, and texts are scrubbed anyway.
Imports polybus core and nats-py only.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import nats.errors
import nats.js.errors

from polybus import (
    BrokerConnectionError,
    NotFoundError,
    OperationTimeout,
    PolybusError,
    PublishError,
)

__all__ = ["CONNECTION_ERRORS", "boundary", "translate"]

STREAM_NOT_FOUND = 10059
CONSUMER_NOT_FOUND = 10014

CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    nats.errors.ConnectionClosedError,
    nats.errors.NoServersError,
    nats.errors.StaleConnectionError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.ConnectionDrainingError,
    nats.errors.AuthorizationError,
    nats.errors.SecureConnFailedError,
    nats.errors.SecureConnRequiredError,
    nats.errors.SecureConnWantedError,
    nats.errors.FlushTimeoutError,
    OSError,
)


def _text(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if text.startswith("nats") else f"{type(exc).__name__}: {text}"


def translate(exc: BaseException, what: str) -> PolybusError:
    """The polybus error for nats-py exception ``exc`` raised while doing ``what``."""
    if isinstance(exc, PolybusError):
        return exc
    if isinstance(exc, nats.js.errors.NotFoundError) or (
        isinstance(exc, nats.js.errors.APIError) and exc.err_code in (STREAM_NOT_FOUND, CONSUMER_NOT_FOUND)
    ):
        return NotFoundError(f"{what}: not found ({exc.description or 'no such stream or consumer'})")
    if isinstance(exc, nats.js.errors.NoStreamResponseError):
        return NotFoundError(f"{what}: no stream answers for this topic (was it deleted?)")
    if isinstance(exc, nats.errors.MaxPayloadError):
        return PublishError(f"{what}: the message is larger than the server's max_payload")
    if isinstance(exc, CONNECTION_ERRORS):
        return BrokerConnectionError(f"{what}: {_text(exc)}")
    if isinstance(exc, asyncio.TimeoutError | nats.errors.TimeoutError):
        return OperationTimeout(f"{what}: no answer from NATS in time")
    if isinstance(exc, nats.js.errors.APIError):
        return PublishError(f"{what}: JetStream refused: {exc.description} (code {exc.err_code})")
    if isinstance(exc, nats.errors.Error):
        return BrokerConnectionError(f"{what}: {_text(exc)}")
    return PolybusError(f"{what}: {_text(exc)}")


@contextlib.contextmanager
def boundary(what: str) -> Iterator[None]:
    """Re-raise any nats-py (or socket) exception of the block as a polybus error."""
    try:
        yield
    except PolybusError:
        raise
    except (TimeoutError, nats.errors.Error, OSError) as exc:
        raise translate(exc, what) from exc
