"""The wire format: a polybus ``Message`` as an SNS publish entry, and an SQS message as a ``Delivery``.

- Body: UTF-8 text that SQS accepts travels as is; any other body (binary, control characters) is
  base64 with attribute ``polybus-encoding: base64``; an empty body is ``"-"`` with
  ``polybus-encoding: empty`` (SNS and SQS refuse empty messages).
- Headers become String message attributes of the same name. SNS and SQS carry at most 10
  attributes, and names are limited to ``[A-Za-z0-9_.-]``; headers that do not fit (too many, a name
  SQS refuses, an empty value) travel together as JSON in attribute ``polybus-headers``.
- ``polybus-id`` carries the message id, ``polybus-key`` the key. ``content-type`` is a header.
- On receipt, a message without ``polybus-id`` (sent by a plain client) takes the SQS MessageId;
  String and Number attributes become headers, Binary ones are dropped; the key of a FIFO message
  without ``polybus-key`` is its MessageGroupId.

Imports only polybus.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

from polybus.adapter import ID_HEADER, Message

__all__ = [
    "ENCODING",
    "KEY",
    "PACKED",
    "RESERVED",
    "decode",
    "decode_attributes",
    "encode",
]

KEY = "polybus-key"
ENCODING = "polybus-encoding"
PACKED = "polybus-headers"
RESERVED = frozenset({ID_HEADER, KEY, ENCODING, PACKED})
MAX_ATTRIBUTES = 10

_NAME = re.compile(r"[A-Za-z0-9_-](?:[A-Za-z0-9_.-]{0,254}[A-Za-z0-9_-])?")
# characters SQS accepts in a body or attribute value (the XML 1.0 character set)
_BAD_CHAR = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _text(data: bytes) -> str | None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return None if _BAD_CHAR.search(text) else text


def _attr_ok(name: str, value: str) -> bool:
    return (
        bool(_NAME.fullmatch(name))
        and ".." not in name
        and not name.lower().startswith(("aws.", "amazon."))
        and name not in RESERVED
        and bool(value)
        and not _BAD_CHAR.search(value)
    )


def encode(message: Message) -> tuple[str, dict[str, dict[str, str]], int]:
    """The SNS ``Message`` text, ``MessageAttributes`` and wire size (what AWS counts) of ``message``."""
    attrs: dict[str, str] = {ID_HEADER: message.id}
    if message.key is not None and message.key != "":
        attrs[KEY] = message.key
    if not message.body:
        body, attrs[ENCODING] = "-", "empty"
    else:
        text = _text(message.body)
        if text is None:
            body, attrs[ENCODING] = base64.b64encode(message.body).decode("ascii"), "base64"
        else:
            body = text
    direct = {k: v for k, v in message.headers.items() if _attr_ok(k, v)}
    packed = {k: v for k, v in message.headers.items() if k not in direct}
    if packed or len(attrs) + len(direct) > MAX_ATTRIBUTES:
        room = MAX_ATTRIBUTES - len(attrs) - 1
        names = list(direct)
        for name in names[room:]:
            packed[name] = direct.pop(name)
        attrs[PACKED] = json.dumps(packed, ensure_ascii=False, separators=(",", ":"))
    attrs.update(direct)
    wire = {name: {"DataType": "String", "StringValue": value} for name, value in attrs.items()}
    size = len(body.encode()) + sum(
        len(n.encode()) + len("String") + len(v.encode()) for n, v in attrs.items()
    )
    return body, wire, size


def decode_attributes(raw: dict[str, Any]) -> dict[str, str]:
    """SQS ``MessageAttributes`` as ``{name: text}``: String and Number values, Binary dropped."""
    out: dict[str, str] = {}
    for name, attr in (raw or {}).items():
        value = attr.get("StringValue")
        if value is not None and not str(attr.get("DataType", "String")).startswith("Binary"):
            out[name] = value
    return out


def decode(body: str, attrs: dict[str, str]) -> tuple[bytes, dict[str, str], str | None, str | None]:
    """Body bytes, headers, key and polybus id from an SQS message body and its attributes."""
    encoding = attrs.get(ENCODING)
    if encoding == "base64":
        try:
            data = base64.b64decode(body, validate=True)
        except ValueError:  # not ours after all: hand the body over as it came
            data = body.encode()
    elif encoding == "empty":
        data = b""
    else:
        data = body.encode()
    headers = {k: v for k, v in attrs.items() if k not in RESERVED}
    if PACKED in attrs:
        try:
            extra = json.loads(attrs[PACKED])
        except ValueError:
            extra = None
        if isinstance(extra, dict):
            headers.update({str(k): str(v) for k, v in extra.items()})
        else:  # not ours after all: keep it as a plain header
            headers[PACKED] = attrs[PACKED]
    return data, headers, attrs.get(KEY), attrs.get(ID_HEADER)
