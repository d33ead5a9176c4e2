"""``Topic``: a named destination on a broker, and ``TopicStats``, what a broker can tell about it.

Adapters subclass ``Topic`` and implement ``_ensure``, ``_delete``, ``_stats`` and the two
factories, and declare the option models of ``consumer(...)`` and ``producer(...)``: the core
validates every call against them, and checks ``start`` against the broker's capabilities.
Imports core modules only.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from polybus._adapter_settings import NoOptions, OptionsModel, validate_options
from polybus._errors import ConfigurationError
from polybus._message import GROUP_HEADER, RESEND_HEADER, Message, resend_mark

if TYPE_CHECKING:
    from polybus._broker import Broker
    from polybus._consumer import Consumer
    from polybus._producer import Producer

__all__ = ["GroupStats", "Start", "Topic", "TopicStats", "check_name"]

Start = Literal["earliest", "latest"]
"""Where a new group starts: at the earliest message the topic retains, or after the latest one."""

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

    consumer_options: ClassVar[type[OptionsModel]] = NoOptions
    """Adapters: the model of the keyword options ``consumer(...)`` accepts (unknown ones are refused)."""
    producer_options: ClassVar[type[OptionsModel]] = NoOptions
    """Adapters: the model of the keyword options ``producer(...)`` accepts (unknown ones are refused)."""

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

    async def send_to_group(self, group: str, messages: Iterable[Message]) -> list[str]:
        """Send ``messages`` to ``group`` of this topic only; return their ids once the broker confirmed.

        Each carries :data:`~polybus.RESEND_HEADER`: a broker that drops re-sent ids keeps these.

        No other group of the topic, and no group-less listener, receives them. Each message keeps its
        id, key and headers (redrive of dead letters relies on it). The group should exist: like any
        message, one sent before its group was created reaches nobody. Where the broker can route to
        one group (capability ``group_send`` native) it does; elsewhere the message goes to the topic
        with the header :data:`~polybus.GROUP_HEADER` and the consumers of the other groups ack it
        without handing it out.
        """
        check_name(group, "group")
        batch = list(messages)
        for message in batch:
            if not isinstance(message, Message):
                raise ConfigurationError(
                    f"send_to_group takes polybus.Message objects, got a {type(message).__name__}"
                )
        if not batch:
            return []
        mark = resend_mark()  # a deliberate re-send of these ids: not a duplicate on dedup brokers
        batch = [Message(m.body, {**m.headers, RESEND_HEADER: mark}, m.key, m.id, m.timestamp) for m in batch]
        await self.broker.open()
        return await self._send_to_group(group, batch)

    async def _send_to_group(self, group: str, messages: list[Message]) -> list[str]:
        """Adapters, optional: route ``messages`` to ``group``'s own queue (declare ``group_send`` native).

        The default sends them to the topic tagged with :data:`~polybus.GROUP_HEADER`.
        """
        tagged = [
            Message(m.body, {**m.headers, GROUP_HEADER: group}, m.key, m.id, m.timestamp) for m in messages
        ]
        async with self.producer() as producer:
            return await producer.send_many(tagged)

    def producer(self, **options: Any) -> Producer:
        """A producer for this topic; use it as an async context manager.

        ``options`` are the adapter's producer options (see its docs); an unknown or invalid one
        raises :class:`~polybus.ConfigurationError`.
        """
        self.broker._check_open()
        checked = validate_options(
            self.producer_options, options, what="producer", where=f"{self.broker.scheme}://"
        )
        return self._producer(checked)

    def consumer(
        self,
        group: str | None = None,
        *,
        prefetch: int | None = None,
        start: Start = "latest",
        **options: Any,
    ) -> Consumer:
        """A consumer in ``group`` (a durable subscription), or a non-durable listener if ``None``.

        ``prefetch`` bounds how many deliveries it holds unsettled; ``None`` takes the broker's default.
        ``start`` applies when the group is created: ``"latest"`` (the default) receives what is sent
        from then on; ``"earliest"`` also receives what the topic still holds from before, and needs
        the ``replay`` capability (:class:`~polybus.UnsupportedCapabilityError` where the broker has
        none). ``options`` are the adapter's consumer options; an unknown or invalid one raises
        :class:`~polybus.ConfigurationError`.
        """
        broker = self.broker
        broker._check_open()
        if group is not None:
            check_name(group, "group")
        if start != "latest":
            if start != "earliest":
                raise ConfigurationError(f"start must be 'earliest' or 'latest', not {start!r}")
            broker.capabilities.require("replay", broker=f"{broker.scheme}://", need='start="earliest"')
        if prefetch is None:
            prefetch = broker.default_prefetch
        elif prefetch.__class__ is not int or prefetch < 1:
            raise ConfigurationError(f"prefetch must be a whole number >= 1, got {prefetch!r}")
        checked = validate_options(
            self.consumer_options, options, what="consumer", where=f"{broker.scheme}://"
        )
        return self._consumer(group, prefetch, start, checked)

    async def _ensure(self) -> None:
        raise NotImplementedError

    async def _delete(self) -> None:
        raise NotImplementedError

    async def _stats(self) -> TopicStats:
        raise NotImplementedError

    def _producer(self, options: Any) -> Producer:
        """Adapters: a producer; ``options`` is an instance of ``producer_options``, validated."""
        raise NotImplementedError

    def _consumer(self, group: str | None, prefetch: int, start: Start, options: Any) -> Consumer:
        """Adapters: a consumer; ``start`` is ``"earliest"`` only where ``replay`` is declared, and
        ``options`` is an instance of ``consumer_options``, validated."""
        raise NotImplementedError
