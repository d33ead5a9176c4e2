"""``GroupRegistry``: the durable list of a topic's groups, which every process can read.

AMQP cannot list the queues bound to an exchange (the management HTTP API can, but is not assumed),
so ``stats()`` and ``delete()`` learn a topic's groups from a queue of its own, ``<topic>.@groups``,
holding one message per group name (``@`` never starts a group name, so no group queue can take
that name). A group is recorded *before* its queue is declared: a group queue that exists is
always listed (a recorded group whose queue is gone is skipped by the readers).

Reading a queue is destructive in AMQP, so a reader takes the registry's lock, gets every message,
publishes one copy per distinct name (confirmed) and only then acks what it got. A reader that dies
half-way leaves its messages unacked, and RabbitMQ requeues them; the copies never count towards a
quorum queue's delivery limit; duplicates left by a crash are merged by the next reader.

The lock is the exclusive queue ``<topic>.@groups-lock``: RabbitMQ lets one connection at a time
declare it and deletes it when that connection closes or dies, so a crashed holder never blocks
the others. Processes share one connection per broker, so an asyncio lock serializes them first.
A lost connection also loses the lock: the whole locked sequence is then retried from the start.
Imports aio-pika and the adapter's leaf modules.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

import aio_pika
import aio_pika.abc
import aiormq.exceptions

from polybus import BrokerConnectionError, ConfigurationError, OperationTimeout
from polybus_rabbitmq._wire import registry_lock_name, registry_queue_name

if TYPE_CHECKING:
    from polybus_rabbitmq._broker import RabbitBroker

__all__ = ["GroupRegistry"]

T = TypeVar("T")

_LOCK_POLL_MAX = 0.2
"""Longest pause between two tries to take a registry lock another connection holds."""

_RELEASING: set[asyncio.Task[None]] = set()
"""Lock releases that outlived a cancelled caller (asyncio keeps only weak references to tasks)."""


class GroupRegistry:
    """The recorded groups of one topic (see the module docstring)."""

    def __init__(self, broker: RabbitBroker, topic: str) -> None:
        self.broker = broker
        self.topic = topic
        self.queue = registry_queue_name(topic)
        self.lock = registry_lock_name(topic)

    async def add(self, group: str) -> None:
        """Record ``group`` (once: a recorded name is not added again)."""

        async def work() -> None:
            await self._declare()
            await self._rewrite(add=group)

        await self._locked(f"recording group {group!r} of {self.topic!r}", work)

    async def groups(self) -> list[str]:
        """The recorded group names, in the order they were first recorded."""
        return await self._locked(f"listing the groups of {self.topic!r}", lambda: self._rewrite(add=None))

    async def delete(self, drop: Callable[[list[str]], Awaitable[None]]) -> None:
        """``drop(groups)`` (deleting their queues), then delete the registry itself."""

        async def work() -> None:
            await drop(await self._rewrite(add=None))

            async def remove(channel: aio_pika.abc.AbstractChannel) -> None:
                await channel.queue_delete(self.queue, if_unused=False, if_empty=False)

            await self.broker.admin_once(f"deleting the group registry of {self.topic!r}", remove)

        await self._locked(f"deleting the groups of {self.topic!r}", work)

    # -- the lock --------------------------------------------------------------------------------

    async def _locked(self, what: str, work: Callable[[], Awaitable[T]]) -> T:
        async def once() -> T:
            async with self._holding():
                return await work()

        return await self.broker.settings.reconnect.run(once, retry_on=(BrokerConnectionError,), what=what)

    @contextlib.asynccontextmanager
    async def _holding(self) -> AsyncIterator[None]:
        async with self.broker.registry_lock:
            await self._acquire()
            try:
                yield
            finally:
                # finish releasing even if the caller is cancelled: others wait for this lock
                release = asyncio.ensure_future(self._release())
                _RELEASING.add(release)
                release.add_done_callback(_RELEASING.discard)
                await asyncio.shield(release)

    async def _acquire(self) -> None:
        async def take(channel: aio_pika.abc.AbstractChannel) -> bool:
            try:
                await channel.declare_queue(self.lock, exclusive=True)
            except aiormq.exceptions.ChannelLockedResource:
                return False  # another connection holds it
            return True

        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.broker.settings.operation_timeout
        pause = 0.005
        while not await self.broker.admin_once(f"locking the group registry of {self.topic!r}", take):
            if loop.time() + pause > deadline:
                raise OperationTimeout(
                    f"the group registry of {self.topic!r} on {self.broker.display_url} stayed locked "
                    f"by another connection for {self.broker.settings.operation_timeout}s"
                )
            await asyncio.sleep(pause)
            pause = min(_LOCK_POLL_MAX, pause * 2)

    async def _release(self) -> None:
        async def drop(channel: aio_pika.abc.AbstractChannel) -> None:
            with contextlib.suppress(aiormq.exceptions.ChannelLockedResource):
                await channel.queue_delete(self.lock)  # locked: ours died with a connection

        # a lost connection released it already; a timeout leaves it to the connection's end
        with contextlib.suppress(BrokerConnectionError, OperationTimeout):
            await self.broker.admin_once(f"unlocking the group registry of {self.topic!r}", drop)

    # -- reading and writing (under the lock) ----------------------------------------------------

    async def _declare(self) -> None:
        arguments: dict[str, aio_pika.abc.FieldValue] | None = (
            {"x-queue-type": "quorum"} if self.broker.uses_quorum else None
        )

        async def declare(channel: aio_pika.abc.AbstractChannel) -> None:
            await channel.declare_queue(self.queue, durable=True, arguments=arguments)

        with contextlib.suppress(ConfigurationError):  # it exists, of the other queue type: use it
            await self.broker.admin_once(f"declaring the group registry of {self.topic!r}", declare)

    async def _rewrite(self, add: str | None) -> list[str]:
        async def rewrite(channel: aio_pika.abc.AbstractChannel) -> list[str]:
            try:
                queue = await channel.declare_queue(self.queue, passive=True)
            except aiormq.exceptions.ChannelNotFoundEntity:
                return []  # no group was ever recorded
            names: dict[str, None] = {}
            last = None
            while (message := await queue.get(no_ack=False, fail=False)) is not None:
                names[message.body.decode(errors="replace")] = None
                last = message
            if add is not None:
                names[add] = None
            await asyncio.gather(
                *(
                    channel.default_exchange.publish(
                        aio_pika.Message(name.encode(), delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                        routing_key=self.queue,
                    )
                    for name in names
                )
            )
            if last is not None:  # the copies are confirmed: the originals can go
                await last.ack(multiple=True)
            return list(names)

        what = f"reading the group registry of {self.topic!r}"
        return await self.broker.admin_once(what, rewrite, confirms=True)
