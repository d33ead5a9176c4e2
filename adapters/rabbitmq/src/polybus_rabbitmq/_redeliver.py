"""``Redeliverer``: puts a nacked message back into its group's queue, now or after a delay.

A nack re-sends a copy (same id, ``polybus-attempt`` raised by one) with publisher confirms, and only
then acks the original, so the attempt count is exact on every queue type and nothing is lost.
Delays use one *delay queue per delay bucket* (``polybus.delay.<kind>.<ms>``): every message in it
has the same TTL, so they expire in order and a long delay never holds up a short one; on expiry
RabbitMQ dead-letters the message through the default exchange to the group's queue, whose name
travels as the routing key. Delay queues are shared by every topic and group of the virtual host.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

import aio_pika
import aio_pika.abc
import aiormq.abc
from pamqp import commands as spec

from polybus import PublishError
from polybus_rabbitmq._errors import CONNECTION_ERRORS, translating
from polybus_rabbitmq._wire import delay_bucket

if TYPE_CHECKING:
    from polybus_rabbitmq._broker import RabbitBroker

__all__ = ["Redeliverer"]


class Redeliverer:
    """Re-sends nacked messages for every consumer of one broker, on one confirmed channel."""

    def __init__(self, broker: RabbitBroker) -> None:
        self.broker = broker
        self._channel: aio_pika.abc.AbstractChannel | None = None
        self._lock = asyncio.Lock()
        self._declared: set[str] = set()

    async def _underlay(self) -> aiormq.abc.AbstractChannel:
        channel = self._channel
        if channel is None or channel.is_closed:
            async with self._lock:
                channel = self._channel
                if channel is None or channel.is_closed:
                    channel = self._channel = await self.broker.channel(confirms=True)
        return await channel.get_underlay_channel()

    def _kind(self) -> str:
        return "q" if self.broker.uses_quorum else "c"

    async def _declare_delay(self, name: str, ms: int) -> None:
        arguments: dict[str, aio_pika.abc.FieldValue] = {
            "x-message-ttl": ms,
            "x-dead-letter-exchange": "",
        }
        if self.broker.uses_quorum:
            # at-least-once dead-lettering: the hop back to the group queue is confirmed internally
            arguments |= {
                "x-queue-type": "quorum",
                "x-dead-letter-strategy": "at-least-once",
                "x-overflow": "reject-publish",
            }

        async def declare(channel: aio_pika.abc.AbstractChannel) -> None:
            exchange = await channel.declare_exchange(name, aio_pika.ExchangeType.FANOUT, durable=True)
            queue = await channel.declare_queue(name, durable=True, arguments=arguments)
            await queue.bind(exchange)

        await self.broker.admin(f"declaring delay queue {name!r}", declare)
        self._declared.add(name)

    async def resend(
        self, queue: str, body: bytes, properties: spec.Basic.Properties, delay: float | None
    ) -> None:
        """Put a copy of a message into ``queue``, after ``delay`` seconds when given.

        Returns once RabbitMQ confirmed the copy. A copy for a queue that no longer exists is dropped.
        """
        where = self.broker.display_url
        if delay:
            ms = delay_bucket(delay)
            exchange = f"polybus.delay.{self._kind()}.{ms}"
            if exchange not in self._declared:
                await self._declare_delay(exchange, ms)
        else:
            ms, exchange = 0, ""
        for first_try in (True, False):
            underlay = await self._underlay()
            with translating(f"re-sending a message to {queue!r}", where):
                result = await underlay.basic_publish(
                    body,
                    exchange=exchange,
                    routing_key=queue,
                    properties=properties,
                    mandatory=True,
                    timeout=self.broker.settings.operation_timeout,
                )
            if isinstance(result, spec.Basic.Ack):
                return
            if isinstance(result, spec.Basic.Nack):
                raise PublishError(f"RabbitMQ refused the re-sent copy for {queue!r} on {where}")
            if not exchange:
                return  # the group's queue is gone: nothing to redeliver to
            if first_try:  # the delay queue was deleted under us: declare it again
                await self._declare_delay(exchange, ms)
        raise PublishError(f"delay queue {exchange!r} on {where} does not accept messages")

    async def aclose(self) -> None:
        """Close the channel (the broker's connection closes next)."""
        channel, self._channel = self._channel, None
        if channel is not None and not channel.is_closed:
            with contextlib.suppress(*CONNECTION_ERRORS):
                await channel.close()
