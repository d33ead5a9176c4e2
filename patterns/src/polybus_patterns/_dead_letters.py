"""Dead letters per group: where a message goes when its group gives up on it, and how it comes back.

The dead letters of group ``G`` of topic ``T`` live on a topic of their own,
:func:`dead_letter_topic` (``T--G--dlq``), in its one group :data:`DEAD_LETTER_GROUP`. That topic
and group are created before the first dead letter is sent, so every broker keeps the letters until
they are read (a message sent to a topic before any group exists reaches nobody). A letter is the
original message (body, headers, key, **id**) plus the ``polybus-dlq-*`` headers below.

:class:`DeadLetters` reads them through the public core API only: ``count`` from ``Topic.stats``;
``peek`` receives and hands back without settling (closing the consumer returns what it holds);
``replay`` sends each chosen letter back to its own group with ``Topic.send_to_group`` (same id, the
dlq headers removed, so the broker counts attempts from 1 again) and acks it; ``purge`` acks. A
letter a filtered ``replay``/``purge`` passes over is re-sent to the end of the dead-letter topic
and acked (not left unsettled): on a broker that commits offsets (Kafka), an unsettled letter before
settled ones would bring those back. The CLI (``polybus dlq``) finds every dead-letter topic of a
broker through a small index topic, :data:`INDEX_TOPIC`, written once per process and pair.
Imports ``polybus`` only.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import hashlib
import json
import logging
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence

import polybus
from polybus import Delivery, Message

__all__ = [
    "ATTEMPTS_HEADER",
    "AT_HEADER",
    "DEAD_LETTER_GROUP",
    "ERROR_HEADER",
    "ERROR_TYPE_HEADER",
    "GROUP_HEADER",
    "INDEX_TOPIC",
    "TOPIC_HEADER",
    "TRACEBACK_HEADER",
    "DeadLetter",
    "DeadLetters",
    "dead_letter_groups",
    "dead_letter_topic",
    "error_type_name",
]

log = logging.getLogger("polybus.patterns")

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


def _error_matches(stored: str | None, wanted: str) -> bool:
    # "ValueError" matches "ValueError"; "DecodeError" matches "polybus.DecodeError" too
    return stored is not None and (stored == wanted or stored.rsplit(".", 1)[-1] == wanted)


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
    async with dead.consumer(DEAD_LETTER_GROUP):
        pass  # joining creates the group: from now on it keeps every letter until read
    index = broker.topic(INDEX_TOPIC)
    async with index.consumer(INDEX_GROUP):
        pass
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


class DeadLetters:
    """The dead letters of ``group`` of ``topic`` on ``broker``: count, peek, replay, purge.

    ``wait`` is how long the first receive waits for a letter the count says is there (a group
    joining on Kafka takes a rebalance); ``idle`` how long a later receive waits before the run
    stops early (letters counted but gone meanwhile).
    """

    def __init__(
        self, broker: polybus.Broker, topic: str, group: str, *, wait: float = 15.0, idle: float = 3.0
    ) -> None:
        self.broker = broker
        self.topic = topic
        self.group = group
        self.dead_letter_topic = dead_letter_topic(topic, group)
        self.wait = wait
        self.idle = idle

    def __repr__(self) -> str:
        return f"<DeadLetters {self.topic!r}/{self.group!r} on {self.broker.display_url}>"

    async def count(self) -> int:
        """How many dead letters wait (from the broker's backlog count: approximate on SQS)."""
        try:
            stats = await self.broker.topic(self.dead_letter_topic).stats()
        except polybus.NotFoundError:
            return 0
        group = stats.groups.get(DEAD_LETTER_GROUP)
        if group is None or group.backlog is None:
            return 0
        return group.backlog + (group.in_flight or 0)

    async def peek(self, limit: int = 10) -> list[DeadLetter]:
        """Up to ``limit`` dead letters, oldest first, left where they are (nothing is consumed)."""
        if limit < 1:
            return []
        wanted = min(limit, await self.count())
        if wanted == 0:
            return []
        topic = self.broker.topic(self.dead_letter_topic)
        letters: list[DeadLetter] = []
        async with topic.consumer(DEAD_LETTER_GROUP, prefetch=wanted) as consumer:
            async for delivery in self._receive(consumer, wanted):
                letters.append(DeadLetter.of(delivery))
        # closing the consumer handed every one back to the group, unsettled
        return letters

    async def replay(
        self,
        ids: Iterable[str] | None = None,
        *,
        error_type: str | None = None,
        limit: int | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> int:
        """Send dead letters back to their own group (only): same id, attempts from 1; the number sent.

        ``ids``, ``error_type`` (``"ValueError"``, or qualified: ``"polybus.DecodeError"``) and
        ``limit`` choose which; the others stay. ``progress(done, total)`` is called as it goes.
        """
        target = self.broker.topic(self.topic)

        async def send_back(letters: list[DeadLetter]) -> None:
            await target.send_to_group(self.group, [letter.original() for letter in letters])

        ids = _id_list(ids)
        return await self._drain(self._chooser(ids, error_type), _most(ids, limit), send_back, progress)

    async def purge(
        self,
        ids: Iterable[str] | None = None,
        *,
        error_type: str | None = None,
        limit: int | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> int:
        """Remove dead letters (all, or those ``ids``, ``error_type``, ``limit`` choose); how many."""

        async def drop(letters: list[DeadLetter]) -> None:
            return None

        ids = _id_list(ids)
        return await self._drain(self._chooser(ids, error_type), _most(ids, limit), drop, progress)

    @staticmethod
    def _chooser(ids: Iterable[str] | None, error_type: str | None) -> Callable[[DeadLetter], bool] | None:
        wanted = None if ids is None else set(ids)
        if wanted is None and error_type is None:
            return None

        def chosen(letter: DeadLetter) -> bool:
            return (wanted is None or letter.id in wanted) and (
                error_type is None or _error_matches(letter.error_type, error_type)
            )

        return chosen

    async def _drain(
        self,
        chosen: Callable[[DeadLetter], bool] | None,
        limit: int | None,
        act: Callable[[list[DeadLetter]], Awaitable[None]],
        progress: Callable[[int, int], None] | None,
    ) -> int:
        """Take each letter (at most the count at the start): ``act`` on the chosen ones in batches,
        re-send the others to the end of the dead-letter topic; ack each once that is confirmed."""
        total = await self.count()
        if limit is not None:
            if limit < 1:
                return 0
            if chosen is None:
                total = min(total, limit)
        if total == 0:
            return 0
        topic = self.broker.topic(self.dead_letter_topic)
        chunk = min(total, 100)
        done = 0
        taken: list[Delivery] = []
        chosen_letters: list[DeadLetter] = []
        passed_over: list[Message] = []
        async with (
            topic.consumer(DEAD_LETTER_GROUP, prefetch=chunk) as consumer,
            topic.producer() as keeper,
        ):

            async def settle() -> None:
                nonlocal done
                if chosen_letters:
                    await act(chosen_letters)
                    done += len(chosen_letters)
                if passed_over:
                    await keeper.send_many(passed_over)
                for delivery in taken:  # only now: what was taken is confirmed elsewhere first
                    await delivery.ack()
                taken.clear()
                chosen_letters.clear()
                passed_over.clear()
                if progress is not None:
                    progress(done, total if chosen is None else max(total, done))

            async for delivery in self._receive(consumer, total):
                taken.append(delivery)
                letter = DeadLetter.of(delivery)
                if (chosen is None or chosen(letter)) and (
                    limit is None or done + len(chosen_letters) < limit
                ):
                    chosen_letters.append(letter)
                else:  # passed over: back to the end of the dead-letter topic, as it was
                    headers = {**delivery.headers, polybus.RESEND_HEADER: uuid.uuid4().hex[:16]}
                    passed_over.append(
                        Message(delivery.body, headers, delivery.key, delivery.id, delivery.timestamp)
                    )
                if limit is not None and done + len(chosen_letters) >= limit:
                    break  # what is left stays where it is (handed back on close)
                if len(taken) >= chunk:
                    await settle()
            await settle()
        return done

    def _receive(self, consumer: polybus.Consumer, wanted: int) -> _Receiving:
        return _Receiving(consumer, wanted, self.wait, self.idle)


def _id_list(ids: Iterable[str] | None) -> list[str] | None:
    if isinstance(ids, str):
        raise TypeError("ids must be a list of message ids, not one str")
    return None if ids is None else list(ids)


def _most(ids: list[str] | None, limit: int | None) -> int | None:
    """At most how many letters a run with ``ids`` and ``limit`` takes (ids name one letter each)."""
    if ids is None:
        return limit
    return len(set(ids)) if limit is None else min(limit, len(set(ids)))


class _Receiving:
    """Async iterator: up to ``wanted`` deliveries, the first waited for ``wait`` s, later ones ``idle`` s."""

    def __init__(self, consumer: polybus.Consumer, wanted: int, wait: float, idle: float) -> None:
        self.consumer = consumer
        self.left = wanted
        self.wait = wait
        self.idle = idle
        self.first = True

    def __aiter__(self) -> _Receiving:
        return self

    async def __anext__(self) -> Delivery:
        if self.left <= 0:
            raise StopAsyncIteration
        deadline = time.monotonic() + (self.wait if self.first else self.idle)
        while True:
            delivery = await self.consumer.receive(timeout=max(0.0, deadline - time.monotonic()))
            if delivery is not None:
                self.first = False
                self.left -= 1
                return delivery
            if time.monotonic() >= deadline:
                raise StopAsyncIteration


async def dead_letter_groups(
    broker: polybus.Broker, topic: str | None = None, *, wait: float = 15.0, idle: float = 3.0
) -> list[tuple[str, str]]:
    """The (topic, group) pairs that have (or had) dead letters on ``broker``, sorted.

    Read from the index topic every dead-lettering process writes to (without consuming it); with
    ``topic``, that topic's own groups are included too (their dead-letter topics may be empty).
    """
    pairs: dict[tuple[str, str], None] = {}
    index = broker.topic(INDEX_TOPIC)
    try:
        stats = await index.stats()
    except polybus.NotFoundError:
        stats = None
    group = stats.groups.get(INDEX_GROUP) if stats is not None else None
    wanted = 0 if group is None or group.backlog is None else group.backlog + (group.in_flight or 0)
    if wanted:
        async with index.consumer(INDEX_GROUP, prefetch=min(wanted, 1000)) as consumer:
            taken = [d async for d in _Receiving(consumer, min(wanted, 1000), wait, idle)]
        # closing handed the entries back: the index stays as it was
        pairs.update(dict.fromkeys(index_entries(taken)))
    if topic is not None:
        pairs = {pair: None for pair in pairs if pair[0] == topic}
        try:
            own = await broker.topic(topic).stats()
        except polybus.NotFoundError:
            own = None
        if own is not None:
            pairs.update(dict.fromkeys((topic, g) for g in own.groups))
    return sorted(pairs)


def index_entries(deliveries: Sequence[Delivery]) -> list[tuple[str, str]]:
    """The (topic, group) pairs index entries name, first seen first, each once."""
    seen: dict[tuple[str, str], None] = {}
    for delivery in deliveries:
        try:
            entry = json.loads(delivery.body)
            seen[(str(entry["topic"]), str(entry["group"]))] = None
        except (ValueError, KeyError, TypeError):
            continue
    return list(seen)
