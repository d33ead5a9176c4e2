"""The in-memory broker, ``memory://``: a real adapter that lives inside one Python process.

It implements the whole semantic model (groups with fan-out between them and competing consumers
inside each, ack / nack(delay) / reject, attempt counting, redelivery of what a closed consumer
held, per-key order for a single consumer, bounded prefetch) and passes the contract suite.
``memory://NAME`` brokers with the same NAME share their topics, the way two connections to one
server would; nothing outlives the process. No asyncio object is kept in the shared state, so
brokers in different event loops (one ``asyncio.run`` per test) may share it safely.
Imports core modules only.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import time
import urllib.parse
from collections.abc import Callable
from typing import Any, ClassVar

from polybus._errors import NotFoundError
from polybus.adapter import (
    AdapterSettings,
    Broker,
    Capabilities,
    Consumer,
    DelayHeap,
    Delivery,
    GroupStats,
    Message,
    NoOptions,
    Outcome,
    Producer,
    Start,
    Support,
    Topic,
    TopicStats,
)

__all__ = ["MemoryBroker", "MemorySettings"]


class MemorySettings(AdapterSettings):
    """Options of ``memory://NAME?max_message_size=...&prefetch=...``.

    ``max_message_size`` is 1 MiB by default, as on the most limited real broker, so that code
    tested here does not surprise elsewhere.
    """

    schemes: ClassVar[tuple[str, ...]] = ("memory",)
    adapter_name: ClassVar[str] = "memory"

    name: str = ""
    """Brokers with the same name share topics within the process."""

    @classmethod
    def url_values(cls, parts: urllib.parse.SplitResult) -> dict[str, Any]:
        return {"name": parts.netloc}


class _Entry:
    __slots__ = ("deliveries", "message")

    def __init__(self, message: Message) -> None:
        self.message = message
        self.deliveries = 0


class _Group:
    """One group's queue: ready entries, delayed entries (by due time), in-flight count."""

    def __init__(self) -> None:
        self.ready: collections.deque[_Entry] = collections.deque()
        self.delayed: DelayHeap[_Entry] = DelayHeap()
        self.in_flight = 0
        self.waiters: set[Callable[[], None]] = set()

    def promote_due(self, now: float) -> float | None:
        """Move due delayed entries to ready; return seconds until the next one, if any."""
        if self.delayed:
            self.ready.extend(self.delayed.pop_due(now))
        due = self.delayed.next_due()
        return None if due is None else due - now

    def wake(self) -> None:
        for waiter in list(self.waiters):
            waiter()


class _TopicState:
    def __init__(self) -> None:
        self.groups: dict[str, _Group] = {}
        self.listeners: set[_Group] = set()
        self.sent = 0
        self.deleted = False

    def publish(self, messages: list[Message]) -> None:
        for group in itertools.chain(self.groups.values(), self.listeners):
            group.ready.extend(_Entry(message) for message in messages)
            if group.waiters:
                group.wake()
        self.sent += len(messages)


class _Hub:
    """The shared state of every ``memory://NAME`` broker with one NAME."""

    def __init__(self) -> None:
        self.topics: dict[str, _TopicState] = {}


_HUBS: dict[str, _Hub] = collections.defaultdict(_Hub)


class MemoryBroker(Broker):
    """The in-process broker. ``polybus.connect("memory://")``."""

    scheme = "memory"
    settings: MemorySettings
    settings_class = MemorySettings

    def __init__(self, settings: MemorySettings | None = None) -> None:
        super().__init__(settings)
        self._hub = _HUBS[self.settings.name]
        self.capabilities = Capabilities(
            competing_consumers=Support.NATIVE,
            fan_out=Support.NATIVE,
            ordering_per_key=Support.NATIVE,
            delayed_nack=Support.NATIVE,
            delivery_count=Support.NATIVE,
            dead_letter=Support.EMULATED,  # dead letters per group: polybus_patterns, from a topic
            replay=Support.UNSUPPORTED,
            priority=Support.UNSUPPORTED,
            dedup=Support.UNSUPPORTED,
            backlog_stats=Support.NATIVE,
            max_message_size=self.settings.max_message_size,
        )

    @property
    def display_url(self) -> str:
        return f"memory://{self.settings.name}"

    def _topic(self, name: str) -> MemoryTopic:
        return MemoryTopic(self, name)

    def _state(self, name: str) -> _TopicState:
        state = self._hub.topics.get(name)
        if state is None:
            raise NotFoundError(f"topic {name!r} does not exist on {self.display_url}")
        return state


class MemoryTopic(Topic):
    broker: MemoryBroker

    async def _ensure(self) -> None:
        self.broker._hub.topics.setdefault(self.name, _TopicState())

    async def _delete(self) -> None:
        state = self.broker._state(self.name)
        state.deleted = True
        del self.broker._hub.topics[self.name]
        for group in itertools.chain(state.groups.values(), state.listeners):
            group.wake()

    async def _stats(self) -> TopicStats:
        state = self.broker._state(self.name)
        return TopicStats(
            topic=self.name,
            groups={
                name: GroupStats(backlog=len(g.ready) + len(g.delayed), in_flight=g.in_flight)
                for name, g in state.groups.items()
            },
            messages=state.sent,
        )

    def _producer(self, options: NoOptions) -> MemoryProducer:
        return MemoryProducer(self)

    def _consumer(self, group: str | None, prefetch: int, start: Start, options: NoOptions) -> MemoryConsumer:
        return MemoryConsumer(self, group, prefetch)


class MemoryProducer(Producer):
    topic: MemoryTopic

    async def _publish(self, messages: list[Message]) -> list[str]:
        self.topic.broker._state(self.topic.name).publish(messages)
        await asyncio.sleep(0)  # a send is a suspension point, as on every networked broker
        return [m.id for m in messages]


class MemoryConsumer(Consumer):
    topic: MemoryTopic

    _group_state: _Group
    _state: _TopicState

    async def _open(self) -> None:
        self._state = self.topic.broker._state(self.topic.name)
        if self.group is None:
            self._group_state = _Group()
            self._state.listeners.add(self._group_state)
        else:
            group = self._state.groups.get(self.group)
            if group is None:
                group = self._state.groups[self.group] = _Group()
            self._group_state = group
        self._loop = asyncio.get_running_loop()
        self._event = asyncio.Event()
        self._group_state.waiters.add(self._wake)

    def _interrupt(self) -> None:
        self._event.set()

    def _wake(self) -> None:
        if asyncio.get_running_loop() is self._loop:
            self._event.set()
        else:  # pragma: no cover - a producer in another thread's loop
            self._loop.call_soon_threadsafe(self._event.set)

    async def _fetch(self, max_messages: int, timeout: float) -> list[Delivery]:
        group = self._group_state
        deadline = time.monotonic() + timeout
        while True:
            if self._state.deleted:
                raise NotFoundError(f"topic {self.topic.name!r} was deleted")
            now = time.monotonic()
            next_due = group.promote_due(now)
            if group.ready:
                return [
                    self._deliver(group.ready.popleft()) for _ in range(min(max_messages, len(group.ready)))
                ]
            wait = deadline - now
            if next_due is not None:
                wait = min(wait, next_due)
            if wait <= 0 or self._closed:
                return []
            self._event.clear()
            try:
                async with asyncio.timeout(wait):
                    await self._event.wait()
            except TimeoutError:
                pass

    def _deliver(self, entry: _Entry) -> Delivery:
        entry.deliveries += 1
        self._group_state.in_flight += 1
        m = entry.message
        return Delivery(
            self,
            id=m.id,
            topic=self.topic.name,
            body=m.body,
            headers=dict(m.headers),
            key=m.key,
            timestamp=m.timestamp,
            attempt=entry.deliveries,
            native=entry,
        )

    async def _settle_native(self, delivery: Delivery, outcome: Outcome, delay: float | None) -> None:
        group = self._group_state
        group.in_flight -= 1
        if outcome is Outcome.NACK:
            entry: _Entry = delivery.native
            if delay:
                group.delayed.push(time.monotonic() + delay, entry)
            else:
                group.ready.append(entry)
            group.wake()

    async def _release(self, deliveries: list[Delivery]) -> None:
        group = self._group_state
        group.waiters.discard(self._wake)
        # back to the front, in the order they were first handed out
        for delivery in reversed(deliveries):
            group.in_flight -= 1
            group.ready.appendleft(delivery.native)
        if self.group is None:
            self._state.listeners.discard(group)
        elif deliveries:
            group.wake()
