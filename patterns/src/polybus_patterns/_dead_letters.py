"""Dead letters per group, the reading side: :class:`DeadLetters` counts, peeks, replays and purges.

It uses the public core API only: ``count`` from ``Topic.stats``; ``peek`` receives and hands back
without settling (closing the consumer returns what it holds); ``replay`` sends each chosen letter
back to its own group with ``Topic.send_to_group`` (same id, the dlq headers removed, so the broker
counts attempts from 1 again) and acks it once that is confirmed; ``purge`` acks. A letter a filtered
``replay``/``purge`` passes over is re-sent to the end of the dead-letter topic and acked (not left
unsettled): on a broker that commits offsets (Kafka), an unsettled letter before settled ones would
bring those back. :func:`dead_letter_groups` reads the index the writing side
(``polybus_patterns._dead_letter``) keeps. Imports ``polybus`` only.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence

import polybus
from polybus import Delivery, Message
from polybus_patterns._dead_letter import (
    DEAD_LETTER_GROUP,
    INDEX_GROUP,
    INDEX_TOPIC,
    DeadLetter,
    dead_letter_topic,
)

__all__ = ["DeadLetters", "dead_letter_groups", "index_entries"]


def _error_matches(stored: str | None, wanted: str) -> bool:
    # "ValueError" matches "ValueError"; "DecodeError" matches "polybus.DecodeError" too
    return stored is not None and (stored == wanted or stored.rsplit(".", 1)[-1] == wanted)


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
