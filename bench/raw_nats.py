"""NATS JetStream driven well with nats-py: publish_async with a window of pending acks, a durable
pull consumer fetched in batches, acks flushed once per batch."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from measure import Driver

__all__ = ["RawNats"]

WINDOW = 1000
BATCH = 500


class RawNats(Driver):
    """A stream per topic (subject = topic name), a durable pull consumer per group."""

    label = "raw"

    def __init__(self, url: str) -> None:
        self.url = url
        self.client: Any = None

    async def setup(self, topic: str, group: str) -> None:
        import nats

        self.client = await nats.connect(servers=[self.url])
        self.js = self.client.jetstream()
        self.stream, self.subject = topic, topic
        await self.js.add_stream(name=topic, subjects=[topic])
        self.sub = await self.js.pull_subscribe(topic, durable=group, stream=topic)

    async def publish(self, body: bytes, count: int, deadline: float) -> int:
        sent = 0
        while sent < count and time.monotonic() < deadline:
            chunk = min(WINDOW, count - sent)
            futures = [await self.js.publish_async(self.subject, body) for _ in range(chunk)]
            await asyncio.gather(*futures)  # the stream's PubAck for each
            sent += chunk
        return sent

    async def _fetch(self, batch: int) -> list[Any]:
        import nats.errors

        try:
            messages: list[Any] = await self.sub.fetch(batch=batch, timeout=1.0)
        except nats.errors.TimeoutError:
            return []
        return messages

    async def consume(self, count: int, deadline: float) -> int:
        received = 0
        while received < count and time.monotonic() < deadline:
            messages = await self._fetch(min(BATCH, count - received))
            for message in messages:
                await message.ack()
            if messages:
                await self.client.flush()
                received += len(messages)
        return received

    async def roundtrip(self, body: bytes, deadline: float) -> bool:
        await self.js.publish(self.subject, body)
        while time.monotonic() < deadline:
            messages = await self._fetch(1)
            if messages:
                await messages[0].ack()
                await self.client.flush()
                return True
        return False

    async def teardown(self) -> None:
        if self.client is None:
            return
        try:
            await self.js.delete_stream(self.stream)
        finally:
            await self.client.close()
