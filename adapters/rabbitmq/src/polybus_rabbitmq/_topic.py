"""``RabbitTopic``: a topic is a durable fanout exchange; each group a durable queue bound to it.

Group queues are named ``<topic>.<group>`` (portable names never contain a dot). AMQP cannot list
the queues bound to an exchange, so every group is recorded in the topic's group registry (see
:mod:`polybus_rabbitmq._registry`) before its queue is declared: ``stats()`` and ``delete()`` see
every group of the topic, whatever process declared it.
"""

from __future__ import annotations

import collections
import logging
from typing import TYPE_CHECKING

import aio_pika
import aio_pika.abc

from polybus import ConfigurationError, NotFoundError
from polybus.adapter import GroupStats, Message, NoOptions, Start, Topic, TopicStats
from polybus_rabbitmq._consumer import RabbitConsumer
from polybus_rabbitmq._producer import RabbitProducer
from polybus_rabbitmq._registry import GroupRegistry
from polybus_rabbitmq._wire import REGISTRY_SUFFIX, exchange_name, group_queue_name

if TYPE_CHECKING:
    from polybus_rabbitmq._broker import RabbitBroker

__all__ = ["RabbitTopic"]

log = logging.getLogger("polybus.rabbitmq")

_KNOWN_GROUPS: dict[tuple[str, int, str, str], set[str]] = collections.defaultdict(set)
"""(host, port, vhost, topic) -> suffixes ``S`` of the queues ``<topic>.S`` this process declared:
its group queues and the topic's group registry. The adapter never reads it (the registry lists
the groups); the test suite's clean-up deletes these queues at the end of a session."""


class RabbitTopic(Topic):
    """A durable fanout exchange named after the topic."""

    broker: RabbitBroker

    def __init__(self, broker: RabbitBroker, name: str) -> None:
        super().__init__(broker, name)
        self.registry = GroupRegistry(broker, name)

    @property
    def exchange(self) -> str:
        """The topic's exchange: named after the topic (a digest shortens names past 127 characters)."""
        return exchange_name(self.name)

    def _remember(self, suffix: str) -> None:
        s = self.broker.settings
        _KNOWN_GROUPS[(s.host, s.port, s.vhost, self.name)].add(suffix)

    async def _ensure(self) -> None:
        async def declare(channel: aio_pika.abc.AbstractChannel) -> None:
            await channel.declare_exchange(self.exchange, aio_pika.ExchangeType.FANOUT, durable=True)

        await self.broker.admin(f"declaring topic {self.name!r}", declare)

    async def _check_exists(self) -> None:
        async def check(channel: aio_pika.abc.AbstractChannel) -> None:
            await channel.get_exchange(self.exchange, ensure=True)

        try:
            await self.broker.admin(f"looking up topic {self.name!r}", check)
        except NotFoundError:
            raise NotFoundError(f"topic {self.name!r} does not exist on {self.broker.display_url}") from None

    async def _delete(self) -> None:
        await self._check_exists()

        async def drop_groups(groups: list[str]) -> None:
            for group in groups:
                queue = group_queue_name(self.name, group)

                async def drop(channel: aio_pika.abc.AbstractChannel, queue: str = queue) -> None:
                    await channel.queue_delete(queue, if_unused=False, if_empty=False)

                await self.broker.admin_once(f"deleting group queue {queue!r}", drop)

        await self.registry.delete(drop_groups)

        async def drop_exchange(channel: aio_pika.abc.AbstractChannel) -> None:
            await channel.exchange_delete(self.exchange, if_unused=False)

        await self.broker.admin(f"deleting topic {self.name!r}", drop_exchange)

    async def _stats(self) -> TopicStats:
        await self._check_exists()
        groups: dict[str, GroupStats] = {}
        for group in sorted(await self.registry.groups()):
            queue = group_queue_name(self.name, group)

            async def count(channel: aio_pika.abc.AbstractChannel, queue: str = queue) -> int | None:
                declared = await channel.declare_queue(queue, passive=True)
                return declared.declaration_result.message_count

            try:
                backlog = await self.broker.admin(f"counting group queue {queue!r}", count)
            except NotFoundError:
                continue  # recorded, but its queue was deleted (or never declared: a crash between)
            groups[group] = GroupStats(backlog=backlog, in_flight=None)
        return TopicStats(topic=self.name, groups=groups)

    async def _exists(self, queue: str) -> bool:
        async def check(channel: aio_pika.abc.AbstractChannel) -> None:
            await channel.declare_queue(queue, passive=True)

        try:
            await self.broker.admin(f"looking up queue {queue!r}", check)
        except NotFoundError:
            return False
        return True

    async def declare_group(self, channel: aio_pika.abc.AbstractChannel, group: str) -> str:
        """Declare ``group``'s durable queue and bind it to the topic; return the queue name.

        Runs on ``channel`` (a fresh admin channel): a mismatch closes it.
        """
        queue = group_queue_name(self.name, group)
        arguments: dict[str, aio_pika.abc.FieldValue] | None = (
            {"x-queue-type": "quorum"} if self.broker.uses_quorum else None
        )
        declared = await channel.declare_queue(queue, durable=True, arguments=arguments)
        await declared.bind(self.exchange, routing_key="")
        self._remember(group)
        return queue

    async def ensure_group(self, group: str) -> str:
        """Record ``group`` in the registry if its queue is new, then declare the queue and bind it.

        An existing queue of the other type is kept under ``queue_type=auto``.
        """
        if not await self._exists(group_queue_name(self.name, group)):
            self._remember(REGISTRY_SUFFIX)
            await self.registry.add(group)

        async def declare(channel: aio_pika.abc.AbstractChannel) -> str:
            return await self.declare_group(channel, group)

        try:
            return await self.broker.admin(f"declaring group {group!r} of {self.name!r}", declare)
        except ConfigurationError:
            if self.broker.settings.queue_type != "auto":
                raise
        # auto: the queue exists with another type (say, a classic queue from an older setup): use it

        async def bind_existing(channel: aio_pika.abc.AbstractChannel) -> str:
            queue = group_queue_name(self.name, group)
            declared = await channel.declare_queue(queue, passive=True)
            await declared.bind(self.exchange, routing_key="")
            self._remember(group)
            return queue

        log.info("group %r of %r keeps its existing queue type", group, self.name)
        return await self.broker.admin(f"joining group {group!r} of {self.name!r}", bind_existing)

    async def _send_to_group(self, group: str, messages: list[Message]) -> list[str]:
        # natively: straight to the group's queue through the default exchange (no header, no skip)
        async with RabbitProducer(self, group_queue_name(self.name, group)) as producer:
            return await producer.send_many(messages)

    def _producer(self, options: NoOptions) -> RabbitProducer:
        return RabbitProducer(self)

    def _consumer(self, group: str | None, prefetch: int, start: Start, options: NoOptions) -> RabbitConsumer:
        # start="earliest" never gets here: replay is unsupported, and the core refuses it
        if prefetch > 65535:
            raise ConfigurationError(f"RabbitMQ's prefetch is at most 65535, got {prefetch}")
        return RabbitConsumer(self, group, prefetch)
