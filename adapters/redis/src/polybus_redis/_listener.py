"""``RedisListener``: a consumer without a group, reading the stream with plain ``XREAD``.

It starts after the stream's last entry at the time it opens (or, with ``start="earliest"``, at
the stream's first entry), so it sees what is sent while it listens, and leaves no trace on
Redis. Being non-durable, it settles locally: ack and reject do nothing, nack(delay) hands the
entry out again from memory after the delay (with ``attempt`` counted here), and closing simply
forgets what it held. Imports ``polybus.adapter`` and this adapter's lower modules.
"""

from __future__ import annotations

import asyncio
import collections
import time
from typing import TYPE_CHECKING, Any

from polybus.adapter import Consumer, DelayHeap, Delivery, Outage, Outcome, Start
from polybus_redis._connection import Reply
from polybus_redis._errors import ConnectionLost
from polybus_redis._link import BlockingLink
from polybus_redis._wire import delivery_of

if TYPE_CHECKING:
    from polybus_redis._broker import RedisTopic

__all__ = ["RedisListener"]


class RedisListener(Consumer):
    """A non-durable listener: sees the entries added to the stream while it is open."""

    topic: RedisTopic

    def __init__(self, topic: RedisTopic, prefetch: int, start: Start = "latest") -> None:
        super().__init__(topic, None, prefetch)
        self._start = start
        self._cursor: bytes = b"0-0"
        self._link: BlockingLink | None = None
        self._outage = Outage(topic.broker.settings.reconnect, f"redis listener of {topic.name!r}")
        self._ready: collections.deque[Delivery] = collections.deque()
        self._delayed: DelayHeap[Delivery] = DelayHeap()

    async def _open(self) -> None:
        broker = self.topic.broker
        if self._start == "latest":
            (info,) = await broker.execute([["XINFO", "STREAM", self.topic.key]], what="listen")
            fields = dict(zip(info[::2], info[1::2], strict=True))
            self._cursor = fields[b"last-generated-id"]
        self._link = BlockingLink(broker)

    async def _fetch(self, max_messages: int, timeout: float) -> list[Delivery]:
        assert self._link is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self.closed:
            self._ready.extend(self._delayed.pop_due(loop.time()))
            if self._ready:
                return [self._ready.popleft() for _ in range(min(max_messages, len(self._ready)))]
            due = self._delayed.next_due()
            until = deadline if due is None else min(deadline, due)
            if not await self._outage.ready(time.monotonic() + until - loop.time()):
                if loop.time() >= deadline - 0.001:
                    return []
                continue  # a delayed delivery is due
            command: list[Any] = ["XREAD", "COUNT", max_messages]
            block_ms = int((until - loop.time()) * 1000)
            if block_ms > 0:
                command += ["BLOCK", block_ms]
            command += ["STREAMS", self.topic.key, self._cursor]
            try:
                replies = await self._link.call([command], what=f"listen to {self.topic.name!r}")
            except ConnectionLost as exc:
                self._outage.failed(exc)
            except asyncio.CancelledError:
                kept = self._link.take_kept()
                if kept is not None:  # Redis answered before the cancellation: keep what it sent
                    self._ready.extend(self._parse(kept))
                raise
            else:
                self._outage.ended()
                out = self._parse(replies)
                if out:
                    return out
            if loop.time() >= deadline - 0.001:
                return []
        return []

    def _parse(self, replies: list[Reply]) -> list[Delivery]:
        (reply,) = replies
        if not reply:
            return []
        entries = reply[0][1]
        self._cursor = entries[-1][0]
        return [self._delivery(entry_id, fields) for entry_id, fields in entries]

    def _delivery(self, entry_id: bytes, fields: list[bytes], attempt: int = 1) -> Delivery:
        return delivery_of(self, entry_id, fields, attempt, (entry_id, fields))

    async def _settle_native(self, delivery: Delivery, outcome: Outcome, delay: float | None) -> None:
        if outcome is not Outcome.NACK:
            return
        entry_id, fields = delivery.native
        again = self._delivery(entry_id, fields, delivery.attempt + 1)
        if delay:
            self._delayed.push(asyncio.get_running_loop().time() + delay, again)
        else:
            self._ready.append(again)

    def _interrupt(self) -> None:
        if self._link is not None:
            self._link.interrupt()

    async def _release(self, deliveries: list[Delivery]) -> None:
        self._ready.clear()
        self._delayed.clear()
        if self._link is not None:
            await self._link.aclose()
