"""Translation of aiokafka's exceptions into the polybus error tree, at the adapter's boundary.

``async with translated("sending to 'orders'", default=PublishError): ...`` re-raises any aiokafka
(or socket / TLS) error as a ``PolybusError`` whose message never carries a password (aiokafka's
messages name hosts and topics only). Imports aiokafka and polybus core modules only.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Iterator

from aiokafka import errors as kerrors

from polybus import (
    BrokerConnectionError,
    NotFoundError,
    OperationTimeout,
    PolybusError,
    PublishError,
)

__all__ = ["CONNECTION_ERRORS", "translate", "translated"]

CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    kerrors.KafkaConnectionError,
    kerrors.NoBrokersAvailable,
    kerrors.NodeNotReadyError,
    kerrors.KafkaUnavailableError,
    kerrors.BrokerNotAvailableError,
    kerrors.AuthenticationFailedError,
    kerrors.AuthenticationMethodNotSupported,
    kerrors.UnsupportedSaslMechanismError,
    kerrors.IllegalSaslStateError,
    kerrors.GroupCoordinatorNotAvailableError,
    kerrors.NotCoordinatorForGroupError,
    kerrors.LeaderNotAvailableError,
    kerrors.NotLeaderForPartitionError,
    ConnectionError,
    ssl.SSLError,
)


def translate(
    exc: BaseException, what: str, default: type[PolybusError] = BrokerConnectionError
) -> PolybusError:
    """The polybus error for ``exc``, raised while ``what`` (for the message)."""
    if isinstance(exc, PolybusError):
        return exc
    text = f"{what}: {type(exc).__name__}: {exc}".rstrip(": ")
    if isinstance(exc, kerrors.UnknownTopicOrPartitionError):
        return NotFoundError(text)
    if isinstance(exc, CONNECTION_ERRORS):
        return BrokerConnectionError(text)
    if isinstance(exc, kerrors.KafkaTimeoutError | kerrors.RequestTimedOutError | TimeoutError):
        return PublishError(text) if default is PublishError else OperationTimeout(text)
    if isinstance(exc, kerrors.MessageSizeTooLargeError | kerrors.RecordListTooLargeError):
        return PublishError(f"{text} (raise the broker's message.max.bytes or lower max_message_size)")
    if isinstance(exc, OSError):
        return BrokerConnectionError(text)
    return default(text)


@contextlib.contextmanager
def translated(what: str, default: type[PolybusError] = BrokerConnectionError) -> Iterator[None]:
    """Re-raise aiokafka, socket and TLS errors inside the block as polybus errors."""
    try:
        yield
    except PolybusError:
        raise
    except (kerrors.KafkaError, OSError, kerrors.ConsumerStoppedError, kerrors.IllegalOperation) as exc:
        raise translate(exc, what, default) from exc
