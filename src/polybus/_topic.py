"""``Topic``: a named destination on a broker, and ``TopicStats``, what a broker can tell about it.

Adapters subclass ``Topic`` and implement ``_ensure``, ``_delete``, ``_stats`` and the two
factories. Imports core modules only.
"""

from __future__ import annotations

import dataclasses
import re
from typing import TYPE_CHECKING, Any

from polybus._errors import ConfigurationError

if TYPE_CHECKING:
    from polybus._broker import Broker
    from polybus._consumer import Consumer
    from polybus._producer import Producer

__all__ = ["GroupStats", "Topic", "TopicStats", "check_name"]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,199}")


def check_name(name: str, what: str) -> str:
    """Return ``name`` if it is portable across every broker; raise ConfigurationError otherwise.

    Portable names are 1-200 characters of ASCII letters, digits, ``_`` and ``-``, starting with a
    letter or digit (the intersection of what SQS, SNS, NATS, Kafka, RabbitMQ and Redis accept).
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigurationError(
            f"invalid {what} name {name!r}: use 1-200 ASCII letters, digits, '_' or '-', "
            "starting with a letter or digit"
        )
    return name


@dataclasses.dataclass(frozen=True, slots=True)
class GroupStats:
    """Counts for one group; ``None`` where the broker cannot tell."""

    backlog: int | None
    """Messages sent to the topic and not yet delivered to the group."""
    in_flight: int | None = None
    """Messages delivered to a member of the group and not yet settled."""


@dataclasses.dataclass(frozen=True, slots=True)
class TopicStats:
    """What the broker can tell about a topic, per group."""

    topic: str
    groups: dict[str, GroupStats]
    messages: int | None = None
    """Messages the topic currently stores, where the broker keeps a log."""


class Topic:
    """A named destination. Get one with ``broker.topic(name)``; it is cheap and holds no connection."""

    def __init__(self, broker: Broker, name: str) -> None:
        self.broker = broker
        self.name = name

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} on {self.broker.scheme}>"

    async def ensure(self) -> None:
        """Create the topic if it does not exist. Idempotent."""
        await self.broker.open()
        await self._ensure()

    async def delete(self) -> None:
        """Delete the topic and its groups; raises :class:`~polybus.NotFoundError` if it is missing."""
        await self.broker.open()
        await self._delete()

    async def stats(self) -> TopicStats:
        """Backlog (and in-flight counts) per group, where the broker can tell."""
        await self.broker.open()
        return await self._stats()

    def producer(self, **options: Any) -> Producer:
        """A producer for this topic; use it as an async context manager."""
        self.broker._check_open()
        return self._producer(**options)

    def consumer(self, group: str | None = None, *, prefetch: int | None = None, **options: Any) -> Consumer:
        """A consumer in ``group`` (a durable subscription), or a non-durable listener if ``None``.

        ``prefetch`` bounds how many deliveries it holds unsettled; ``None`` takes the broker's default.
        """
        self.broker._check_open()
        if group is not None:
            check_name(group, "group")
        return self._consumer(
            group, self.broker.default_prefetch if prefetch is None else prefetch, **options
        )

    async def _ensure(self) -> None:
        raise NotImplementedError

    async def _delete(self) -> None:
        raise NotImplementedError

    async def _stats(self) -> TopicStats:
        raise NotImplementedError

    def _producer(self, **options: Any) -> Producer:
        raise NotImplementedError

    def _consumer(self, group: str | None, prefetch: int, **options: Any) -> Consumer:
        raise NotImplementedError
