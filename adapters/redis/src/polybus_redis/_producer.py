"""``RedisProducer``: ``XADD`` to a stream, pipelined, returning once Redis replied to every entry.

Sends made at the same time (several tasks, or ``send_many``) are coalesced by one writer task
into pipelines of ``XADD`` commands: one round trip per batch. When the broker has ``max_len``,
the writer adds the ``TRIM`` script to a pipeline every so often (see ``_scripts.TRIM``).
Closing waits for the sends already under way. Imports ``polybus``, ``polybus.adapter``, redis-py's
exceptions and this adapter's lower modules (``_broker`` for typing only).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from redis.exceptions import ResponseError

from polybus import PolybusError
from polybus.adapter import Message, Producer
from polybus_redis._connection import Command
from polybus_redis._scripts import TRIM
from polybus_redis._wire import xadd_command

if TYPE_CHECKING:
    from polybus_redis._broker import RedisTopic

__all__ = ["RedisProducer"]

log = logging.getLogger("polybus.redis")

BATCH = 5000
"""Most ``XADD`` commands in one pipeline."""
TRIM_LIMIT = 10_000
"""Most entries one ``TRIM`` call removes (it runs again with the next batches)."""


class RedisProducer(Producer):
    """Sends to one stream; ``send``/``send_many`` return after Redis stored every entry."""

    topic: RedisTopic

    def __init__(self, topic: RedisTopic) -> None:
        super().__init__(topic)
        self._queue: list[tuple[list[Message], asyncio.Future[list[str]]]] = []
        self._writer: asyncio.Task[None] | None = None
        max_len = topic.broker.settings.max_len
        self._trim_every = None if max_len is None else max(1, min(max_len // 10, 1000))
        self._since_trim = 0

    async def _publish(self, messages: list[Message]) -> list[str]:
        if len(messages) > BATCH:
            parts = [messages[i : i + BATCH] for i in range(0, len(messages), BATCH)]
            return [mid for ids in await asyncio.gather(*map(self._publish, parts)) for mid in ids]
        future: asyncio.Future[list[str]] = asyncio.get_running_loop().create_future()
        self._queue.append((messages, future))
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._write())
        return await future

    async def _write(self) -> None:
        try:
            while self._queue:
                batch, size = [], 0
                while self._queue and size + len(self._queue[0][0]) <= BATCH:
                    item = self._queue.pop(0)
                    batch.append(item)
                    size += len(item[0])
                await self._send_batch(batch)
        finally:
            self._writer = None

    async def _send_batch(self, batch: list[tuple[list[Message], asyncio.Future[list[str]]]]) -> None:
        key = self.topic.key
        commands: list[Command] = [xadd_command(key, m) for messages, _ in batch for m in messages]
        n = len(commands)
        trim = False
        if self._trim_every is not None:
            self._since_trim += n
            if self._since_trim >= self._trim_every:
                trim, self._since_trim = True, 0
                commands.append(TRIM.command([key], [self.topic.broker.settings.max_len, TRIM_LIMIT]))
        try:
            replies = await self.topic.broker.execute(
                commands, what=f"send to {self.topic.name!r}", check=False
            )
            for reply in replies[:n]:
                if isinstance(reply, ResponseError):
                    raise self.topic.broker.translate(reply, f"send to {self.topic.name!r}") from reply
        except PolybusError as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        if trim and isinstance(replies[-1], ResponseError):
            log.warning("trimming %r failed: %s", self.topic.name, replies[-1])
        for messages, future in batch:
            if not future.done():
                future.set_result([m.id for m in messages])

    async def _aclose(self) -> None:
        while self._writer is not None:  # the sends under way finish
            await asyncio.shield(self._writer)
        await super()._aclose()
