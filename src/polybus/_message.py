"""Messages and their codecs: what goes on the wire, and how bodies are encoded and decoded.

Bodies are bytes on the wire. ``send`` accepts bytes, str, JSON-serialisable values and pydantic
models; the content type travels in the ``content-type`` header so the consumer can decode it.
There is no pickle anywhere. Imports only ``polybus._errors``.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import os
import sys
import time
import uuid
from collections.abc import Iterable
from typing import Any, TypeVar

import pydantic

from polybus._errors import DecodeError, EncodeError

__all__ = [
    "BYTES_HEADER_SIZE",
    "CONTENT_TYPE",
    "DECODE_FAILURES",
    "GROUP_HEADER",
    "ID_HEADER",
    "RESEND_HEADER",
    "Message",
    "decode_body",
    "encode_body",
    "messages_of",
    "new_message_id",
    "resend_mark",
]

CONTENT_TYPE = "content-type"
"""Header naming the body's content type (``application/json``, ``text/plain; charset=utf-8``...)."""
ID_HEADER = "polybus-id"
"""Header carrying the message id on brokers that have no native id field of their own."""
RESEND_HEADER = "polybus-resend"
"""Header marking a deliberate re-send of a message id (a redrive, a dead letter): a value unique to
that send. Brokers that drop re-sent ids (capability ``dedup``) de-duplicate on the id and this value
together, so the re-send is stored while a retry of the same send is still dropped."""
GROUP_HEADER = "polybus-group"
"""Header naming the one group a message sent with ``Topic.send_to_group`` is for, where the broker
has no route to one group (capability ``group_send`` emulated): the consumers of every other group
ack it unseen, and the named group's consumers hand it out without the header."""

JSON = "application/json"
TEXT = "text/plain; charset=utf-8"
BYTES = "application/octet-stream"

T = TypeVar("T")


class _IdSource:
    """32-hex-digit ids: 64 random bits per process, then a counter. Unique, and cheap on hot paths."""

    def __init__(self) -> None:
        self.reset()
        os.register_at_fork(after_in_child=self.reset)

    def reset(self) -> None:
        # 16 hex digits of prefix, then the counter as 16 more (2**64 ids before it would widen)
        self.template = os.urandom(8).hex() + "%016x"
        self.counter = itertools.count(int.from_bytes(os.urandom(4)))

    def __call__(self) -> str:
        return self.template % next(self.counter)

    def many(self, count: int) -> list[str]:
        """``count`` new ids (unique even when other threads take ids meanwhile)."""
        template = self.template
        return [template % n for n in itertools.islice(self.counter, count)]


new_message_id = _IdSource()
"""A new unique message id (32 hex characters)."""


@dataclasses.dataclass(slots=True)
class Message:
    """A message ready to send: an encoded body plus headers and an optional ordering key.

    Build one with :meth:`Message.of` to encode a Python value, or directly from bytes.
    """

    body: bytes
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    key: str | None = None
    id: str = dataclasses.field(default_factory=new_message_id)
    timestamp: float = dataclasses.field(default_factory=time.time)

    @classmethod
    def of(cls, value: Any, *, key: str | None = None, headers: dict[str, str] | None = None) -> Message:
        """Encode ``value`` (bytes, str, JSON value or pydantic model) into a message."""
        if value.__class__ is bytes and headers is None and key is None:  # the hot path of send_many
            return cls(body=value, headers={CONTENT_TYPE: BYTES})
        if isinstance(value, Message):
            return value
        body, content_type = encode_body(value)
        merged = {CONTENT_TYPE: content_type}
        if headers:
            merged.update(check_headers(headers))
        if key is not None and not isinstance(key, str):
            raise EncodeError(f"key must be a str or None, not {type(key).__name__}")
        return cls(body=body, headers=merged, key=key)

    @property
    def size(self) -> int:
        """Bytes this message occupies: body plus header names and values (UTF-8)."""
        return len(self.body) + sum(len(k.encode()) + len(v.encode()) for k, v in self.headers.items())

    def fits(self, limit: int) -> bool:
        """True if :attr:`size` is within ``limit`` (cheap unless the message is close to it)."""
        # a str of n characters encodes to at most 4n bytes: only near the limit count exactly
        chars = 0
        for name, value in self.headers.items():
            chars += len(name) + len(value)
        return len(self.body) + 4 * chars <= limit or self.size <= limit


BYTES_HEADER_SIZE = len(CONTENT_TYPE) + len(BYTES)
"""What the ``content-type`` header of a body of bytes adds to :attr:`Message.size`."""


def messages_of(items: Iterable[Any], limit: int | None) -> tuple[list[Message], Message | None]:
    """The messages ``send_many`` sends for ``items``, and the first one larger than ``limit`` (if any).

    Items are :class:`Message` objects (kept as they are) or bodies as :meth:`Message.of` accepts.
    This is the hot path of every publish: plain ``bytes`` bodies take a shortcut that builds the
    message directly (one timestamp for the whole call) and checks its size with one comparison.
    """
    ids = new_message_id
    template, counter = ids.template, ids.counter
    now = time.time()
    new = object.__new__
    room = sys.maxsize if limit is None else limit - BYTES_HEADER_SIZE  # for a body of bytes
    messages: list[Message] = []
    too_large = None
    for item in items:
        if item.__class__ is bytes:
            m = new(Message)
            m.body = item
            m.headers = {CONTENT_TYPE: BYTES}
            m.key = None
            m.id = template % next(counter)
            m.timestamp = now
            if len(item) > room and too_large is None:
                too_large = m
        else:
            m = item if isinstance(item, Message) else Message.of(item)
            if limit is not None and too_large is None and not m.fits(limit):
                too_large = m
        messages.append(m)
    return messages, too_large


def resend_mark() -> str:
    """A new value for :data:`RESEND_HEADER`."""
    return uuid.uuid4().hex[:16]


def check_headers(headers: dict[Any, Any]) -> dict[str, str]:
    """Return ``headers`` if every name and value is a str; raise :class:`EncodeError` otherwise."""
    for name, value in headers.items():
        if not isinstance(name, str) or not isinstance(value, str):
            kinds = f"{type(name).__name__} -> {type(value).__name__}"
            raise EncodeError(f"headers must map str to str; got {kinds} for {name!r}")
    return headers


def encode_body(value: Any) -> tuple[bytes, str]:
    """Encode a body; return the bytes and their content type."""
    if isinstance(value, bytes):
        return value, BYTES
    if isinstance(value, bytearray | memoryview):
        return bytes(value), BYTES
    if isinstance(value, str):
        return value.encode(), TEXT
    if isinstance(value, pydantic.BaseModel):
        return value.model_dump_json().encode(), JSON
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode(), JSON
    except (TypeError, ValueError) as exc:
        raise EncodeError(
            f"cannot encode a {type(value).__name__} body: send bytes, str, a JSON-serialisable value "
            "or a pydantic model (polybus never pickles)"
        ) from exc


@functools.lru_cache(maxsize=256)
def _adapter(model: Any) -> pydantic.TypeAdapter[Any]:
    return pydantic.TypeAdapter(model)


DECODE_FAILURES = (ValueError, UnicodeDecodeError, RecursionError, pydantic.ValidationError)
"""What decoding a body may raise, all turned into :class:`DecodeError`: ``json.loads`` raises
``RecursionError`` (not ``ValueError``) for a body nested deeper than the interpreter's stack, e.g.
100,000 ``[``: a foreign producer's body must never fail a handler in a way that is retried."""


def decode_body(body: bytes, model: type[T] | Any = None) -> Any:
    """Decode JSON ``body``, validated into ``model`` (a pydantic model or any type pydantic knows)."""
    try:
        if model is None:
            return json.loads(body)
        if model is bytes:
            return body
        if model is str:
            return body.decode()
        if isinstance(model, type) and issubclass(model, pydantic.BaseModel):
            return model.model_validate_json(body)
        return _adapter(model).validate_json(body)
    except DECODE_FAILURES as exc:
        what = "JSON" if model is None else getattr(model, "__name__", repr(model))
        raise DecodeError(f"body of {len(body)} bytes does not decode as {what}: {exc}") from exc
