"""RabbitMQ driven well with aio-pika: publisher confirms with a window of in-flight publishes,
basic.qos prefetch and one multiple-ack per batch of deliveries."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from measure import Driver

__all__ = ["RawRabbitMQ"]

WINDOW = 500
PREFETCH = 1000
ACK_EVERY = 100


class RawRabbitMQ(Driver):
    """A durable fanout exchange per topic, a durable queue bound to it per group."""

    label = "raw"

    def __init__(self, url: str) -> None:
        self.url = url
        self.connection: Any = None

    async def setup(self, topic: str, group: str) -> None:
        import aio_pika

        self.aio_pika = aio_pika
        self.connection = await aio_pika.connect(self.url)
        self.publish_channel = await self.connection.channel(publisher_confirms=True)
        self.exchange = await self.publish_channel.declare_exchange(
            topic, aio_pika.ExchangeType.FANOUT, durable=True
        )
        self.consume_channel = await self.connection.channel()
        await self.consume_channel.set_qos(prefetch_count=PREFETCH)
        self.queue = await self.consume_channel.declare_queue(group, durable=True)
        await self.queue.bind(topic)
        self.inbox: asyncio.Queue[Any] = asyncio.Queue()
        self.tag = await self.queue.consume(self.inbox.put)

    def _message(self, body: bytes) -> Any:
        return self.aio_pika.Message(body, delivery_mode=self.aio_pika.DeliveryMode.PERSISTENT)

    async def publish(self, body: bytes, count: int, deadline: float) -> int:
        sent = 0
        while sent < count and time.monotonic() < deadline:
            chunk = min(WINDOW, count - sent)
            # each publish returns when the broker confirmed it; WINDOW of them are in flight
            await asyncio.gather(*(self.exchange.publish(self._message(body), "") for _ in range(chunk)))
            sent += chunk
        return sent

    async def consume(self, count: int, deadline: float) -> int:
        received = 0
        last = None
        while received < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                last = await asyncio.wait_for(self.inbox.get(), min(remaining, 1.0))
            except TimeoutError:
                continue
            received += 1
            if received % ACK_EVERY == 0 or received == count:
                await last.ack(multiple=True)
                last = None
        if last is not None:
            await last.ack(multiple=True)
        return received

    async def roundtrip(self, body: bytes, deadline: float) -> bool:
        await self.exchange.publish(self._message(body), "")
        try:
            message = await asyncio.wait_for(self.inbox.get(), max(0.01, deadline - time.monotonic()))
        except TimeoutError:
            return False
        await message.ack()
        return True

    async def teardown(self) -> None:
        if self.connection is None:
            return
        try:
            await self.queue.cancel(self.tag)
            await self.queue.delete(if_unused=False, if_empty=False)
            await self.exchange.delete()
        finally:
            await self.connection.close()
