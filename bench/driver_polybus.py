"""The polybus driver: the same generic code for every broker, through ``polybus.connect(url)``.

Publishes with ``producer.send_many`` in batches (``window`` of them under way at once), consumes
with ``consumer.receive`` + ``ack`` one delivery at a time, the way an application would.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from measure import Driver

import polybus

__all__ = ["PolybusDriver"]


class PolybusDriver(Driver):
    """Drives any broker through the polybus API."""

    label = "polybus"

    def __init__(self, url: str, *, batch: int = 500, window: int = 1, prefetch: int | None = None) -> None:
        self.url = url
        self.batch = batch
        self.window = window
        self.prefetch = prefetch
        self.broker: Any = None
        self.topic: Any = None
        self.producer: Any = None
        self.consumer: Any = None

    async def setup(self, topic: str, group: str) -> None:
        self.broker = polybus.connect(self.url)
        await self.broker.open()
        self.topic = self.broker.topic(topic)
        await self.topic.ensure()
        self.consumer = self.topic.consumer(group, prefetch=self.prefetch)
        await self.consumer.open()  # the group exists before anything is published
        self.producer = self.topic.producer()
        await self.producer.open()

    async def publish(self, body: bytes, count: int, deadline: float) -> int:
        sent = 0
        under_way: set[asyncio.Task[list[str]]] = set()
        queued = 0
        while queued < count and time.monotonic() < deadline:
            chunk = min(self.batch, count - queued)
            under_way.add(asyncio.ensure_future(self.producer.send_many([body] * chunk)))
            queued += chunk
            if len(under_way) >= self.window:
                done, under_way = await asyncio.wait(under_way, return_when=asyncio.FIRST_COMPLETED)
                sent += sum(len(task.result()) for task in done)
        if under_way:
            sent += sum(len(ids) for ids in await asyncio.gather(*under_way))
        return sent

    async def consume(self, count: int, deadline: float) -> int:
        received = 0
        while received < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            delivery = await self.consumer.receive(timeout=min(remaining, 5.0))
            if delivery is None:
                continue
            await delivery.ack()
            received += 1
        return received

    async def roundtrip(self, body: bytes, deadline: float) -> bool:
        await self.producer.send(body)
        while time.monotonic() < deadline:
            delivery = await self.consumer.receive(timeout=min(5.0, max(0.01, deadline - time.monotonic())))
            if delivery is not None:
                await delivery.ack()
                return True
        return False

    async def teardown(self) -> None:
        if self.broker is None:
            return
        try:
            for resource in (self.consumer, self.producer):
                if resource is not None:
                    await resource.aclose()
            if self.topic is not None:
                try:
                    await self.topic.delete()
                except polybus.PolybusError:
                    pass  # cleanup is best effort; the figures are already taken
        finally:
            await self.broker.aclose()
