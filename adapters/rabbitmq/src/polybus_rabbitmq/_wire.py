"""The wire format: how a polybus message maps onto an AMQP message, and names of broker objects.

Outgoing: ``message_id`` = the polybus id, ``timestamp`` = send time (whole seconds, AMQP's unit)
plus the exact time in milliseconds in header ``polybus-ts``, ``content_type`` = the ``content-type``
header, ``delivery_mode`` = 2 (persistent), ``routing_key`` = the key, user headers as AMQP string
headers, plus ``polybus-key`` (when a key is set) and ``polybus-attempt`` (on copies polybus re-sends
for ``nack``). A request's reply address travels in the ``reply_to`` property; on receipt a direct
reply-to address there becomes the delivery's ``polybus-reply-to`` header. Incoming messages from
any AMQP producer are mapped back; what they lack is filled in.
Imports pamqp and ``polybus.adapter`` only.
"""

from __future__ import annotations

import datetime
import hashlib
import math
import time
from collections.abc import Mapping
from typing import Any

from pamqp import commands as spec

from polybus.adapter import CONTENT_TYPE, REPLY_TO_HEADER, Message

__all__ = [
    "ATTEMPT_HEADER",
    "DIRECT_REPLY_TO",
    "KEY_HEADER",
    "REGISTRY_SUFFIX",
    "TS_HEADER",
    "Incoming",
    "delay_bucket",
    "exchange_name",
    "group_queue_name",
    "properties_for",
    "registry_lock_name",
    "registry_queue_name",
    "resend_properties",
]

KEY_HEADER = "polybus-key"
ATTEMPT_HEADER = "polybus-attempt"
TS_HEADER = "polybus-ts"
DELIVERY_COUNT = "x-delivery-count"
_INTERNAL = frozenset({KEY_HEADER, ATTEMPT_HEADER, TS_HEADER})
_BROKER_PREFIXES = ("x-death", "x-first-death-", "x-last-death-", DELIVERY_COUNT)

DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"
"""RabbitMQ's direct reply-to pseudo-queue; the server rewrites it into ``<it>.<token>`` per channel."""

MAX_QUEUE_NAME = 255
MAX_EXCHANGE_NAME = 127
"""Longest exchange name pamqp (under aio-pika) writes; AMQP itself allows 255 bytes."""
MAX_DELAY_MS = 2**32 - 1


def exchange_name(topic: str) -> str:
    """The exchange of ``topic``: its name, or for a name longer than pamqp writes (portable names
    run to 200 characters), its first 110 characters, a dot and a digest (no name has a dot)."""
    if len(topic) <= MAX_EXCHANGE_NAME:
        return topic
    digest = hashlib.sha256(topic.encode()).hexdigest()[:16]
    return f"{topic[:110]}.{digest}"


def group_queue_name(topic: str, group: str) -> str:
    """The durable queue of ``group`` on ``topic``: ``topic.group`` (dots never occur in names)."""
    name = f"{topic}.{group}"
    if len(name) <= MAX_QUEUE_NAME:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:16]
    return f"{topic[:110]}.{group[:110]}.{digest}"


REGISTRY_SUFFIX = "@groups"
"""The registry of topic ``T`` is the queue ``T.@groups``: no group name starts with ``@``."""


def registry_queue_name(topic: str) -> str:
    """The queue listing ``topic``'s groups (see :mod:`polybus_rabbitmq._registry`)."""
    return f"{topic}.{REGISTRY_SUFFIX}"


def registry_lock_name(topic: str) -> str:
    """The exclusive queue whose holder may read and write ``topic``'s group registry."""
    return f"{topic}.@groups-lock"


def delay_bucket(delay: float) -> int:
    """Milliseconds of the delay queue used for ``delay`` seconds: rounded *up* to 2 significant digits.

    Rounding bounds the number of delay queues (about 90 per decade) while never redelivering early;
    a delay is at most 10% longer than asked.
    """
    ms = max(1, math.ceil(delay * 1000))
    if ms >= 100:
        scale = 10 ** (len(str(ms)) - 2)
        ms = -(-ms // scale) * scale
    if ms > MAX_DELAY_MS:
        raise ValueError(f"nack delay {delay}s exceeds RabbitMQ's largest TTL ({MAX_DELAY_MS // 1000}s)")
    return ms


def properties_for(message: Message, *, attempt: int | None = None) -> spec.Basic.Properties:
    """The AMQP properties carrying ``message`` (``attempt``: first attempt number of a re-sent copy)."""
    headers: dict[str, Any] = {}
    content_type = None
    for name, value in message.headers.items():
        if name == CONTENT_TYPE:
            content_type = value
        elif name not in _INTERNAL:
            headers[name] = value
    if message.key is not None:
        headers[KEY_HEADER] = message.key
    if attempt is not None and attempt > 1:
        headers[ATTEMPT_HEADER] = str(attempt)
    headers[TS_HEADER] = str(round(message.timestamp * 1000))
    return spec.Basic.Properties(
        content_type=content_type,
        delivery_mode=2,
        message_id=message.id,
        timestamp=datetime.datetime.fromtimestamp(int(message.timestamp), tz=datetime.UTC),
        headers=headers,
    )


def _text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray):
        try:
            return bytes(value).decode()
        except UnicodeDecodeError:
            return None
    if isinstance(value, bool | int | float | datetime.datetime):
        return str(value)
    return None  # tables, arrays, None: no faithful string form


def _int(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


class Incoming:
    """The polybus view of one delivered AMQP message (what a :class:`~polybus.Delivery` is built from)."""

    __slots__ = ("attempt", "headers", "id", "key", "timestamp")

    def __init__(
        self,
        properties: spec.Basic.Properties,
        body: bytes,
        *,
        routing_key: str,
        redelivered: bool,
    ) -> None:
        raw: Mapping[str, Any] = properties.headers or {}
        headers: dict[str, str] = {}
        for name, value in raw.items():
            if name in _INTERNAL or name.startswith(_BROKER_PREFIXES):
                continue
            text = _text(value)
            if text is not None:
                headers[name] = text
        if properties.content_type:
            headers[CONTENT_TYPE] = properties.content_type
        reply_to = properties.reply_to
        if reply_to and reply_to.startswith(DIRECT_REPLY_TO):  # a request of a polybus inbox
            headers[REPLY_TO_HEADER] = reply_to
        self.headers = headers
        key = raw.get(KEY_HEADER)
        self.key: str | None = _text(key) if key is not None else None
        base = max(1, _int(raw.get(ATTEMPT_HEADER), 1))
        count = raw.get(DELIVERY_COUNT)
        if count is not None:  # quorum queues count returns themselves
            self.attempt = base + max(0, _int(count, 0))
        else:  # classic queues only say whether the message was delivered before
            self.attempt = base + (1 if redelivered else 0)
        ts = _int(raw.get(TS_HEADER), -1)
        if ts >= 0:
            self.timestamp = ts / 1000
        elif isinstance(properties.timestamp, datetime.datetime):
            stamp = properties.timestamp
            if stamp.tzinfo is None:
                stamp = stamp.replace(tzinfo=datetime.UTC)
            self.timestamp = stamp.timestamp()
        else:
            self.timestamp = time.time()
        # A message without message_id (a foreign producer) gets an id derived from its content,
        # so that it stays the same when the message is redelivered.
        self.id: str = properties.message_id or (
            "amqp-"
            + hashlib.sha256(
                repr((sorted(headers.items()), routing_key, properties.timestamp)).encode() + body
            ).hexdigest()[:32]
        )


def resend_properties(properties: spec.Basic.Properties, *, id: str, attempt: int) -> spec.Basic.Properties:
    """Properties of the copy re-sent for a ``nack``: same id and headers, next ``attempt`` number.

    Headers the broker added (``x-death``, ``x-delivery-count``...) are left out, and so are the
    ``expiration`` and ``user_id`` of the original (the copy is sent by this connection).
    """
    headers = {
        name: value
        for name, value in (properties.headers or {}).items()
        if name != ATTEMPT_HEADER and not name.startswith(_BROKER_PREFIXES)
    }
    headers[ATTEMPT_HEADER] = str(attempt)
    return spec.Basic.Properties(
        content_type=properties.content_type,
        content_encoding=properties.content_encoding,
        headers=headers,
        delivery_mode=2,
        priority=properties.priority,
        correlation_id=properties.correlation_id,
        reply_to=properties.reply_to,
        message_id=id,
        timestamp=properties.timestamp,
        message_type=properties.message_type,
        app_id=properties.app_id,
    )
