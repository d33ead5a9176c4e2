"""Redis Streams driven well with redis-py: pipelined XADD, XREADGROUP COUNT n, one XACK per batch."""

from __future__ import annotations

import time
from typing import Any

from measure import Driver

__all__ = ["RawRedis"]

WINDOW = 500


class RawRedis(Driver):
    """A stream per topic, a consumer group per group (the model polybus maps Redis onto)."""

    label = "raw"

    def __init__(self, url: str) -> None:
        self.url = url
        self.client: Any = None

    async def setup(self, topic: str, group: str) -> None:
        import redis.asyncio

        self.client = redis.asyncio.Redis.from_url(self.url)
        self.stream, self.group = topic, group
        await self.client.xgroup_create(self.stream, self.group, id="$", mkstream=True)

    async def publish(self, body: bytes, count: int, deadline: float) -> int:
        sent = 0
        while sent < count and time.monotonic() < deadline:
            chunk = min(WINDOW, count - sent)
            async with self.client.pipeline(transaction=False) as pipe:
                for _ in range(chunk):
                    pipe.xadd(self.stream, {b"body": body})
                await pipe.execute()  # every reply is the server's confirmation
            sent += chunk
        return sent

    async def _read(self, count: int, block_ms: int) -> list[bytes]:
        reply = await self.client.xreadgroup(
            self.group, "bench", {self.stream: ">"}, count=count, block=block_ms
        )
        return [entry_id for _, entries in reply for entry_id, _fields in entries]

    async def consume(self, count: int, deadline: float) -> int:
        received = 0
        while received < count and time.monotonic() < deadline:
            ids = await self._read(min(WINDOW, count - received), 1000)
            if ids:
                await self.client.xack(self.stream, self.group, *ids)
                received += len(ids)
        return received

    async def roundtrip(self, body: bytes, deadline: float) -> bool:
        await self.client.xadd(self.stream, {b"body": body})
        while time.monotonic() < deadline:
            ids = await self._read(1, 1000)
            if ids:
                await self.client.xack(self.stream, self.group, *ids)
                return True
        return False

    async def teardown(self) -> None:
        if self.client is not None:
            await self.client.delete(self.stream)
            await self.client.aclose()
