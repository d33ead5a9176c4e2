"""The polybus exception tree.

Every error polybus raises, and every error an adapter lets out, is a ``PolybusError``.
Adapters translate their client library's exceptions at the boundary
(``raise BrokerConnectionError(...) from exc``); the contract suite checks that no
client-library exception escapes.

    PolybusError
    ├── ConfigurationError          bad URL, bad option, nothing registered for a scheme
    │   └── UnknownSchemeError
    ├── BrokerConnectionError       cannot reach the broker, or the connection was lost
    ├── NotFoundError               topic or group does not exist
    ├── UnsupportedCapabilityError  the broker cannot provide what was asked for
    ├── MessageTooLargeError        the encoded message exceeds the broker's limit
    ├── PublishError                the broker refused or did not confirm a message
    ├── DeliveryStateError          ack/nack/reject on a delivery that was already settled
    ├── EncodeError                 a body polybus cannot encode (also a TypeError)
    ├── DecodeError                 a payload that does not decode as asked
    ├── ClosedError                 use of a broker, producer or consumer after aclose()
    └── OperationTimeout            an operation did not finish in time (also a TimeoutError)

This module imports nothing from the rest of polybus.
"""

from __future__ import annotations

__all__ = [
    "BrokerConnectionError",
    "ClosedError",
    "ConfigurationError",
    "DecodeError",
    "DeliveryStateError",
    "EncodeError",
    "MessageTooLargeError",
    "NotFoundError",
    "OperationTimeout",
    "PolybusError",
    "PublishError",
    "UnknownSchemeError",
    "UnsupportedCapabilityError",
]


class PolybusError(Exception):
    """Root of every error polybus raises."""


class ConfigurationError(PolybusError):
    """A URL, setting or option is invalid."""


class UnknownSchemeError(ConfigurationError):
    """No installed adapter handles the URL's scheme."""


class BrokerConnectionError(PolybusError):
    """The broker cannot be reached, refused the credentials, or the connection dropped."""


class NotFoundError(PolybusError):
    """A topic or group that must exist does not."""


class UnsupportedCapabilityError(PolybusError):
    """The broker cannot provide a capability that was required."""


class MessageTooLargeError(PolybusError):
    """The encoded message is larger than the broker accepts. Nothing was sent."""

    def __init__(self, size: int, limit: int, *, topic: str | None = None) -> None:
        where = f" to topic {topic!r}" if topic else ""
        super().__init__(f"message of {size} bytes is larger than the broker's limit of {limit} bytes{where}")
        self.size = size
        self.limit = limit
        self.topic = topic


class PublishError(PolybusError):
    """The broker refused a message or did not confirm it; it may or may not be stored."""


class DeliveryStateError(PolybusError):
    """A delivery was settled (acked, nacked or rejected) twice."""


class EncodeError(PolybusError, TypeError):
    """A body or header polybus cannot encode (no pickle: bytes, str, JSON values, pydantic models)."""


class DecodeError(PolybusError):
    """A payload could not be decoded into the requested form."""


class ClosedError(PolybusError):
    """The object was closed with ``aclose()`` and cannot be used again."""


class OperationTimeout(PolybusError, TimeoutError):
    """An operation did not complete within its time limit."""
