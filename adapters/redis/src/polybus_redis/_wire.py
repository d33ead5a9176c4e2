"""The wire format: how a polybus message is laid out as the fields of one stream entry.

    XADD <stream> * body <bytes> polybus-id <id> [key <key>] <header> <value> ...

- ``body``: the message body, raw bytes.
- ``polybus-id``: the message id (stable across redeliveries); entries without it (written by
  another client) use the stream entry id instead.
- ``key``: the ordering key, when the message has one.
- every header is a field of its own (``content-type`` among them); a header whose name is
  ``body``, ``key``, ``polybus-id`` or starts with ``h:`` is written as ``h:<name>``.
- the timestamp is the millisecond part of the entry id (the server's clock at ``XADD``).

Any field of an entry written by another client that is not ``body`` or ``key`` becomes a header.
Names on the server are here too: the due-time hash of a stream, and the ``polybus-parked``
consumer. Imports ``polybus.adapter`` only.
"""

from __future__ import annotations

from typing import Any

from polybus.adapter import ID_HEADER, Consumer, Delivery, Message

__all__ = ["BODY", "KEY", "PARKED", "decode_fields", "due_key", "entry_timestamp", "xadd_command"]

BODY = b"body"
KEY = b"key"
_ID = ID_HEADER.encode()
_ESCAPE = "h:"
_RESERVED = frozenset({"body", "key", ID_HEADER})

PARKED = "polybus-parked"
"""Consumer name that owns nacked and handed-back entries until a member reclaims them."""


def due_key(stream: str) -> str:
    """The hash of due times of entries nacked for longer than the visibility timeout.

    ``{stream}`` is a hash tag: on a cluster it lands in the stream's slot.
    """
    return f"polybus:due:{{{stream}}}"


def xadd_command(stream: str, message: Message, *, existing_only: bool = False) -> bytes:
    """The ``XADD`` command storing ``message`` as one entry of ``stream``, packed for the wire.

    ``existing_only``: ``NOMKSTREAM``, the command stores nothing (and replies nil) when the stream
    does not exist (replies to a closed inbox must not bring its stream back).
    """
    fields: list[bytes] = [BODY, message.body, _ID, message.id.encode()]
    if message.key is not None:
        fields += (KEY, message.key.encode())
    for name, value in message.headers.items():
        if name in _RESERVED or name.startswith(_ESCAPE):
            name = _ESCAPE + name
        fields += (name.encode(), value.encode())
    stream_bytes = stream.encode()
    if existing_only:
        head = b"*%d\r\n$4\r\nXADD\r\n$%d\r\n%s\r\n$10\r\nNOMKSTREAM\r\n$1\r\n*\r\n"
        parts = [head % (len(fields) + 4, len(stream_bytes), stream_bytes)]
    else:
        head = b"*%d\r\n$4\r\nXADD\r\n$%d\r\n%s\r\n$1\r\n*\r\n"
        parts = [head % (len(fields) + 3, len(stream_bytes), stream_bytes)]
    for field in fields:
        parts += (b"$%d\r\n" % len(field), field, b"\r\n")
    return b"".join(parts)


def decode_fields(
    entry_id: bytes, fields: list[bytes] | None
) -> tuple[str, bytes, str | None, dict[str, str]]:
    """``(id, body, key, headers)`` of an entry's flat field list ``[name, value, name, value...]``."""
    body = b""
    key: str | None = None
    message_id: str | None = None
    headers: dict[str, str] = {}
    if fields:
        it = iter(fields)
        for raw_name, value in zip(it, it, strict=True):
            if raw_name == BODY:
                body = value
            elif raw_name == _ID:
                message_id = value.decode(errors="replace")
            elif raw_name == KEY:
                key = value.decode(errors="replace")
            else:
                name = raw_name.decode(errors="replace")
                if name.startswith(_ESCAPE):
                    name = name[len(_ESCAPE) :]
                headers[name] = value.decode(errors="replace")
    return message_id or entry_id.decode(), body, key, headers


def entry_timestamp(entry_id: bytes) -> float:
    """The entry's time (seconds since the epoch), from the millisecond part of its id."""
    return int(entry_id.split(b"-", 1)[0]) / 1000.0


def delivery_of(
    consumer: Consumer, entry_id: bytes, fields: list[bytes], attempt: int, native: Any
) -> Delivery:
    """The delivery of a stream entry read by ``consumer`` (a group member or a listener)."""
    message_id, body, key, headers = decode_fields(entry_id, fields)
    return Delivery(
        consumer,
        message_id,
        consumer.topic.name,
        body,
        headers,
        key,
        entry_timestamp(entry_id),
        attempt,
        native,
    )
