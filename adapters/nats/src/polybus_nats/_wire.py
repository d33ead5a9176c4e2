"""The wire format: how a polybus message is laid out in a JetStream message, and back.

- body: the JetStream payload, unchanged.
- headers: the polybus headers (``content-type`` and the sender's own) as NATS headers, plus
  ``Nats-Msg-Id: <message id>`` (the server de-duplicates re-sends on it) and, when the message
  has one, ``polybus-key: <key>``. A deliberate re-send of an id (``polybus-resend``, set by
  ``send_to_group`` and the dead letters) has ``Nats-Msg-Id: <id>:<resend>`` and ``polybus-id: <id>``.
- on receipt, ``Nats-*`` headers (NATS' own) and ``polybus-key`` are removed from ``headers``; the id
  is ``Nats-Msg-Id`` (or ``<stream>:<sequence>`` for a message sent without one), ``attempt`` the
  consumer's delivery count and ``timestamp`` the time the server stored the message, both read
  from the ack subject. Imports the polybus core only.
"""

from __future__ import annotations

from typing import NamedTuple

from polybus import ID_HEADER, RESEND_HEADER, Message

__all__ = [
    "HEADROOM",
    "KEY_HEADER",
    "MSG_ID_HEADER",
    "AckInfo",
    "parse_ack_subject",
    "user_headers",
    "wire_headers",
    "wire_size",
]

HEADROOM = 512
"""Bytes of the server's ``max_payload`` kept for the headers polybus adds (message id, key)."""
MSG_ID_HEADER = "Nats-Msg-Id"
KEY_HEADER = "polybus-key"
_HEADER_LINE = len("NATS/1.0\r\n") + len("\r\n")


def wire_headers(message: Message) -> dict[str, str]:
    """The NATS headers that carry ``message``."""
    headers = dict(message.headers)
    resend = headers.get(RESEND_HEADER)
    if resend is None:
        headers[MSG_ID_HEADER] = message.id
    else:  # a deliberate re-send (a redrive): its own de-duplication key, the id in polybus-id
        headers[MSG_ID_HEADER] = f"{message.id}:{resend}"
        headers[ID_HEADER] = message.id
    if message.key is not None:
        headers[KEY_HEADER] = message.key
    return headers


def wire_size(body: bytes, headers: dict[str, str]) -> int:
    """Bytes the server counts against ``max_payload``: the payload plus the header block."""
    return len(body) + _HEADER_LINE + sum(len(k.encode()) + len(v.encode()) + 4 for k, v in headers.items())


def user_headers(headers: dict[str, str] | None) -> tuple[dict[str, str], str | None, str | None]:
    """Split received NATS headers into (polybus headers, key, message id)."""
    if not headers:
        return {}, None, None
    out: dict[str, str] = {}
    key = msg_id = polybus_id = None
    for name, value in headers.items():
        if name == KEY_HEADER:
            key = value
        elif name == MSG_ID_HEADER:
            msg_id = value
        elif name == ID_HEADER:
            polybus_id = value
        elif not name.startswith("Nats-"):
            out[name] = value
    return out, key, polybus_id or msg_id


class AckInfo(NamedTuple):
    """What the ack subject of a JetStream delivery tells."""

    stream: str
    delivered: int
    stream_seq: int
    timestamp: float


def parse_ack_subject(reply: str) -> AckInfo:
    """Parse ``$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>`` (or the v2 form)."""
    tokens = reply.split(".")
    if len(tokens) == 9:
        offset = 0
    elif len(tokens) >= 11:
        offset = 2  # $JS.ACK.<domain>.<account hash>.<stream>...
    else:
        raise ValueError(f"not a JetStream ack subject: {reply!r}")
    return AckInfo(
        stream=tokens[2 + offset],
        delivered=int(tokens[4 + offset]),
        stream_seq=int(tokens[5 + offset]),
        timestamp=int(tokens[7 + offset]) / 1e9,
    )
