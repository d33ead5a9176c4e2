"""The wire format: Kafka names polybus derives, and the record headers it adds and reads.

A polybus message is one Kafka record: value = body, key = UTF-8 key, timestamp = send time (ms),
headers = the message's headers plus ``polybus-id``, without a ``content-type`` of
``application/octet-stream`` (implied by ``polybus-id``). Copies on a retry topic also carry
``polybus-attempt`` and ``polybus-due``. Reading headers back is here too, except the consumer's
hot path (one ``polybus-id``), which it inlines. Imports polybus.adapter only.
"""

from __future__ import annotations

import contextlib
import hashlib
from typing import Any

from polybus.adapter import BYTES, CONTENT_TYPE, ID_HEADER, Message

__all__ = [
    "ATTEMPT_HEADER",
    "DUE_HEADER",
    "ID_HEADER",
    "INTERNAL_HEADERS",
    "due_time",
    "group_id",
    "read_headers",
    "record_headers",
    "retry_topic",
]

ATTEMPT_HEADER = "polybus-attempt"
"""On retry copies: the attempt number of the next delivery (2, 3...)."""
DUE_HEADER = "polybus-due"
"""On retry copies: when the copy may be delivered, in milliseconds since the epoch."""
INTERNAL_HEADERS = frozenset({ID_HEADER, ATTEMPT_HEADER, DUE_HEADER})
"""Headers polybus reads itself and does not show in ``Delivery.headers``."""

_MAX_NAME = 249  # Kafka's limit for topic names


def _bounded(name: str) -> str:
    if len(name) <= _MAX_NAME:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:16]
    return f"{name[: _MAX_NAME - 17]}_{digest}"


def group_id(topic: str, group: str) -> str:
    """The Kafka consumer group of polybus group ``group`` on ``topic``: ``<topic>.<group>``.

    polybus names never contain ``.``, so the mapping is unambiguous, and groups of the same name
    on different topics stay apart, as the semantic model requires.
    """
    return f"{topic}.{group}"


def split_group_id(topic: str, gid: str) -> str | None:
    """The polybus group name of Kafka group ``gid`` if it belongs to ``topic``, else ``None``."""
    prefix = f"{topic}."
    if gid.startswith(prefix) and "." not in gid[len(prefix) :]:
        return gid[len(prefix) :]
    return None


def retry_topic(topic: str, group: str) -> str:
    """The group's own retry topic, ``<topic>.<group>.retry``, read by the group alongside ``topic``."""
    return _bounded(f"{topic}.{group}.retry")


_ENCODED: dict[str, tuple[str, bytes]] = {}
"""Encoded ``content-type`` headers by value: a handful of values on every message of a service."""


def record_headers(message: Message, extra: dict[str, str] | None = None) -> list[tuple[str, bytes]]:
    """Kafka headers for ``message``: its headers, ``polybus-id``, then ``extra``.

    On the topic itself (no ``extra``), ``content-type: application/octet-stream`` is left out: a
    record there with ``polybus-id`` and no content type is bytes, and the consumer says so. Every
    header costs the broker and every consumer work per record, and bytes are what most high-volume
    streams carry. Retry copies (``extra`` given) keep the content type as it was delivered, also
    when there was none (a record from a plain producer).
    """
    source = message.headers
    if extra is None and len(source) == 1 and CONTENT_TYPE in source:  # the hot path: a body, no headers
        content_type = source[CONTENT_TYPE]
        if content_type == BYTES:
            return [(ID_HEADER, message.id.encode())]
        pair = _ENCODED.get(content_type) or _encoded_content_type(content_type)
        return [pair, (ID_HEADER, message.id.encode())]
    implied = extra is None and source.get(CONTENT_TYPE) == BYTES
    if implied or ID_HEADER in source or ATTEMPT_HEADER in source or DUE_HEADER in source:
        source = {
            k: v
            for k, v in source.items()
            if k not in INTERNAL_HEADERS and not (implied and k == CONTENT_TYPE)
        }
    headers = [(k, v.encode()) for k, v in source.items()]
    headers.append((ID_HEADER, message.id.encode()))
    if extra:
        headers.extend((k, v.encode()) for k, v in extra.items())
    return headers


def _encoded_content_type(value: str) -> tuple[str, bytes]:
    pair = (CONTENT_TYPE, value.encode())
    if len(_ENCODED) < 64:  # bounded: content types are few, but nothing stops a service from varying them
        _ENCODED[value] = pair
    return pair


def read_headers(pairs: Any, retry: bool) -> tuple[dict[str, str], str | None, int]:
    """Headers, message id and attempt from any record's headers (values need not be UTF-8).

    ``retry``: the record is a copy on a retry topic, whose content type is kept as it was.
    """
    headers: dict[str, str] = {}
    message_id = None
    attempt = 1
    for name, value in pairs or ():
        try:
            text = value.decode() if value is not None else ""
        except UnicodeDecodeError:
            text = value.decode("utf-8", "backslashreplace")
        if name == ID_HEADER:
            message_id = text
        elif name not in INTERNAL_HEADERS:
            headers[name] = text
        elif name == ATTEMPT_HEADER:
            with contextlib.suppress(ValueError):  # a malformed value is ignored
                attempt = max(1, int(text))
    if message_id is not None and not retry and CONTENT_TYPE not in headers:
        headers[CONTENT_TYPE] = BYTES  # polybus leaves the content type of bytes out of the record
    return headers, message_id, attempt


def due_time(pairs: Any) -> float:
    """When a retry copy may be delivered (seconds since the epoch; 0 = now), from ``polybus-due``."""
    for name, value in pairs or ():
        if name == DUE_HEADER:
            with contextlib.suppress(ValueError, AttributeError, TypeError):  # malformed: due now
                return int(value) / 1000
    return 0.0
