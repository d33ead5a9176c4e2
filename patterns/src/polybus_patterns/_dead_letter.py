"""Dead letters per group, the writing side: what a dead letter is, where it goes, how it is sent.

The dead letters of group ``G`` of topic ``T`` live on a topic of their own,
:func:`dead_letter_topic` (``T--G--dlq``), in its one group :data:`DEAD_LETTER_GROUP`. That topic
and group are created before the first dead letter is sent (:func:`prepare`), so every broker keeps
the letters until they are read (a message sent to a topic before any group exists reaches nobody).
A letter is the original message (body, headers, key, **id**) plus the ``polybus-dlq-*`` headers
below, and ``polybus-resend`` (the id was sent before: brokers that de-duplicate ids keep it).
:func:`prepare` also records the pair in the index topic :data:`INDEX_TOPIC`, once per process, so
that ``polybus dlq list URL`` finds every dead-letter topic of a broker. Reading, replaying and
purging are ``polybus_patterns._dead_letters``. Imports ``polybus`` only.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import hashlib
import traceback
import uuid

import polybus
from polybus import Delivery, Message

__all__ = [
    "ATTEMPTS_HEADER",
    "AT_HEADER",
    "DEAD_LETTER_GROUP",
    "DLQ_HEADERS",
    "ERROR_HEADER",
    "ERROR_TYPE_HEADER",
    "GROUP_HEADER",
    "INDEX_GROUP",
    "INDEX_TOPIC",
    "TOPIC_HEADER",
    "TRACEBACK_HEADER",
    "DeadLetter",
    "DeadLetterSender",
    "dead_letter_topic",
    "error_type_name",
    "letter_for",
    "prepare",
]

TOPIC_HEADER = "polybus-dlq-topic"
"""The topic the message was sent to."""
GROUP_HEADER = "polybus-dlq-group"
"""The group that gave up on it (the one a replay sends it back to)."""
ATTEMPTS_HEADER = "polybus-dlq-attempts"
"""How many deliveries the group made (``Delivery.attempt`` of the last one)."""
ERROR_TYPE_HEADER = "polybus-dlq-error-type"
"""The exception's type: ``ValueError`` for builtins, else ``module.QualName`` (``polybus.DecodeError``)."""
ERROR_HEADER = "polybus-dlq-error"
"""The exception's message, at most :data:`ERROR_LIMIT` characters."""
TRACEBACK_HEADER = "polybus-dlq-traceback"
"""The end of the formatted traceback, at most :data:`TRACEBACK_LIMIT` characters."""
AT_HEADER = "polybus-dlq-at"
"""When the group gave up: ISO 8601, UTC (``2026-12-02T16:40:00.123456+00:00``)."""
DLQ_HEADERS = (
    polybus.RESEND_HEADER,
    TOPIC_HEADER,
    GROUP_HEADER,
    ATTEMPTS_HEADER,
    ERROR_TYPE_HEADER,
    ERROR_HEADER,
    TRACEBACK_HEADER,
    AT_HEADER,
)

ERROR_LIMIT = 1000
TRACEBACK_LIMIT = 4000
DEAD_LETTER_GROUP = "dead-letters"
"""The one group of every dead-letter topic: the letters wait there until read."""
INDEX_TOPIC = "polybus-dlq-index"
"""Where each dead-letter topic is recorded (once per process), so ``polybus dlq list URL`` finds it."""
INDEX_GROUP = "index"

_NAME_LIMIT = 200


def dead_letter_topic(topic: str, group: str) -> str:
    """The name of the dead-letter topic of ``group`` of ``topic``: ``{topic}--{group}--dlq``.

    Names that contain ``--`` or would pass 200 characters are shortened and end with a hash of both
    (``{topic}--{group}--dlq-{hash10}``), so two pairs never share a dead-letter topic.
    """
    plain = f"{topic}--{group}--dlq"
    if "--" not in topic and "--" not in group and len(plain) <= _NAME_LIMIT:
        return plain
    digest = hashlib.sha256(f"{topic}\0{group}".encode()).hexdigest()[:10]
    return f"{topic.replace('--', '-')[:90]}--{group.replace('--', '-')[:90]}--dlq-{digest}"


def error_type_name(exc: BaseException) -> str:
    """``ValueError`` for a builtin, ``polybus.DecodeError`` for polybus's own, else ``module.QualName``."""
    kind = type(exc)
    module = kind.__module__
    if module == "builtins":
        return kind.__qualname__
    if module.startswith("polybus._"):  # polybus's own errors go by their public name
        module = "polybus"
    return f"{module}.{kind.__qualname__}"


@dataclasses.dataclass(frozen=True)
class DeadLetter:
    """One dead letter as :meth:`DeadLetters.peek` shows it (the original message and why it failed)."""

    id: str
    body: bytes
    headers: dict[str, str]
    """Every header: the original ones and the ``polybus-dlq-*`` ones."""
    key: str | None
    topic: str
    group: str
    error_type: str | None
    error: str | None
    traceback: str | None
    attempts: int | None
    failed_at: datetime.datetime | None

    @classmethod
    def of(cls, delivery: Delivery) -> DeadLetter:
        """The dead letter a delivery from a dead-letter topic carries."""
        h = delivery.headers
        attempts = h.get(ATTEMPTS_HEADER)
        at = h.get(AT_HEADER)
        try:
            failed_at = datetime.datetime.fromisoformat(at) if at else None
        except ValueError:
            failed_at = None
        return cls(
            id=delivery.id,
            body=delivery.body,
            headers=dict(h),
            key=delivery.key,
            topic=h.get(TOPIC_HEADER, ""),
            group=h.get(GROUP_HEADER, ""),
            error_type=h.get(ERROR_TYPE_HEADER),
            error=h.get(ERROR_HEADER),
            traceback=h.get(TRACEBACK_HEADER),
            attempts=int(attempts) if attempts and attempts.isdigit() else None,
            failed_at=failed_at,
        )

    def original(self) -> Message:
        """The message as it was first sent: same id, body, key and headers (the dlq headers removed)."""
        headers = {k: v for k, v in self.headers.items() if k not in DLQ_HEADERS}
        return Message(self.body, headers, self.key, self.id)  # send_to_group marks the re-send


def letter_for(delivery: Delivery, group: str, exc: BaseException, *, with_traceback: bool = True) -> Message:
    """The dead letter of ``delivery``, which ``group`` gave up on after ``exc``."""
    headers = {k: v for k, v in delivery.headers.items() if k not in DLQ_HEADERS}
    headers[TOPIC_HEADER] = delivery.topic
    headers[GROUP_HEADER] = group
    headers[ATTEMPTS_HEADER] = str(delivery.attempt)
    headers[ERROR_TYPE_HEADER] = error_type_name(exc)
    headers[ERROR_HEADER] = str(exc)[:ERROR_LIMIT]
    if with_traceback:
        text = "".join(traceback.format_exception(exc))
        headers[TRACEBACK_HEADER] = text[-TRACEBACK_LIMIT:]
    headers[AT_HEADER] = datetime.datetime.now(datetime.UTC).isoformat()
    headers[polybus.RESEND_HEADER] = uuid.uuid4().hex[:16]  # the id was sent before: not a duplicate
    return Message(delivery.body, headers, delivery.key, delivery.id, delivery.timestamp)


async def prepare(broker: polybus.Broker, topic: str, group: str) -> polybus.Topic:
    """Create the dead-letter topic of ``group`` of ``topic`` and its group, and record it in the index."""
    dead = broker.topic(dead_letter_topic(topic, group))
    index = broker.topic(INDEX_TOPIC)

    async def join(topic: polybus.Topic, group: str) -> None:
        async with topic.consumer(group):
            pass  # joining creates the group: from now on it keeps every message until read

    await asyncio.gather(join(dead, DEAD_LETTER_GROUP), join(index, INDEX_GROUP))  # one join's wait
    entry = {"topic": topic, "group": group, "dead_letter_topic": dead.name}
    async with index.producer() as producer:
        await producer.send(entry)
    return dead


class DeadLetterSender:
    """Sends dead letters for one middleware: a producer per (broker, topic, group), prepared once."""

    def __init__(self) -> None:
        self._producers: dict[tuple[int, str, str], polybus.Producer] = {}
        self._locks: dict[tuple[int, str, str], asyncio.Lock] = {}

    async def send(self, delivery: Delivery, group: str, exc: BaseException) -> None:
        """Dead-letter ``delivery``; returns once the broker confirmed (raises a PolybusError otherwise)."""
        broker = delivery.broker
        key = (id(broker), delivery.topic, group)
        producer = self._producers.get(key)
        if producer is None or producer.closed:
            lock = self._locks.setdefault(key, asyncio.Lock())
            async with lock:
                producer = self._producers.get(key)
                if producer is None or producer.closed:
                    dead = await prepare(broker, delivery.topic, group)
                    producer = self._producers[key] = dead.producer()
        try:
            await producer.send_many([letter_for(delivery, group, exc)])
        except polybus.MessageTooLargeError:  # the traceback made it too large: send it without
            await producer.send_many([letter_for(delivery, group, exc, with_traceback=False)])
