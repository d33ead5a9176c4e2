"""``RedisBroker`` and ``RedisTopic``: a Redis server seen as a polybus broker of streams.

A topic is a stream (key ``{prefix}{topic}``), a group is a consumer group of that stream. The
broker owns redis-py's connection pool and runs every command through :meth:`RedisBroker.execute`,
which translates client errors and retries lost connections with the ``ReconnectPolicy``.
Imports ``polybus``, ``polybus.adapter``, redis-py and this adapter's modules (every one of them
imports in one direction: none imports this module at run time).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from redis.asyncio.connection import AbstractConnection, ConnectionPool
from redis.exceptions import NoScriptError, ResponseError

from polybus import ConfigurationError, NotFoundError, PolybusError
from polybus.adapter import (
    INBOX_PREFIX,
    Broker,
    Capabilities,
    GroupStats,
    Message,
    Start,
    Support,
    Topic,
    TopicStats,
    check_name,
)
from polybus_redis._connection import Command, Finisher, Reply, raise_lost_cancel, roundtrip
from polybus_redis._consumer import RedisConsumer
from polybus_redis._errors import ConnectionLost, translate
from polybus_redis._listener import RedisListener
from polybus_redis._producer import RedisProducer
from polybus_redis._scripts import ENSURE, SCRIPTS, STATS
from polybus_redis._settings import ConsumerOptions, RedisSettings
from polybus_redis._wire import PARKED, due_key, xadd_command

__all__ = ["RedisBroker", "RedisTopic"]

log = logging.getLogger("polybus.redis")


class RedisBroker(Broker):
    """A Redis server (5.0+; 7.0+ for exact backlog counts). ``polybus.connect("redis://host:6379/0")``.

    See :class:`RedisSettings` for the options (query string or keyword arguments).
    """

    scheme = "redis"
    settings: RedisSettings
    settings_class = RedisSettings

    def __init__(self, settings: RedisSettings | None = None) -> None:
        super().__init__(settings)
        self.capabilities = Capabilities(
            competing_consumers=Support.NATIVE,
            fan_out=Support.NATIVE,
            ordering_per_key=Support.NATIVE,
            delayed_nack=Support.EMULATED,
            delivery_count=Support.NATIVE,
            dead_letter=Support.EMULATED,  # dead letters per group: polybus_patterns, from a topic
            replay=Support.NATIVE,
            priority=Support.UNSUPPORTED,
            dedup=Support.UNSUPPORTED,
            backlog_stats=Support.NATIVE,
            max_message_size=self.settings.max_message_size,
        )
        self._pool: ConnectionPool | None = None
        self._background: set[asyncio.Task[Any]] = set()
        secret = self.settings.password
        self._secret = secret.get_secret_value() if secret else None

    @property
    def display_url(self) -> str:
        return self.settings.display_url

    def stream_key(self, topic: str) -> str:
        """The Redis key of the stream behind ``topic``."""
        return self.settings.prefix + topic

    def _topic(self, name: str) -> RedisTopic:
        return RedisTopic(self, name)

    async def _reply(self, address: str, message: Message) -> None:
        """The core's emulated reply (the inbox is a stream), sent with ``XADD NOMKSTREAM``: a reply
        to a closed inbox is dropped by Redis instead of bringing the inbox's stream back."""
        if not address.startswith(INBOX_PREFIX):
            raise ConfigurationError(
                f"{address!r} is not an inbox address (they start with {INBOX_PREFIX!r})"
            )
        check_name(address, "inbox")
        command = xadd_command(self.stream_key(address), message, existing_only=True)
        (stored,) = await self.execute([command], what=f"reply to {address!r}")
        if stored is None:
            log.debug("reply to %r dropped: that inbox is closed", address)

    # -- connection ---------------------------------------------------------------------------

    async def _open(self) -> None:
        self._pool = ConnectionPool(**self.settings.connection_kwargs())
        try:
            await self.execute([["PING"]], what="connect", retry=False)
            await self._load_scripts()
        except BaseException:
            await self._pool.disconnect()
            raise

    async def _aclose(self) -> None:
        for task in list(self._background):
            task.cancel()
        if self._pool is not None:
            await self._pool.disconnect()

    @property
    def pool(self) -> ConnectionPool:
        """redis-py's connection pool (the broker must be open)."""
        if self._pool is None:
            raise ConfigurationError(f"{self!r} is not open")
        return self._pool

    def translate(self, exc: BaseException, what: str) -> PolybusError:
        """The polybus error for a redis-py exception (password scrubbed)."""
        return translate(exc, what=what, where=self.display_url, secret=self._secret)

    async def execute(
        self,
        commands: Sequence[Command],
        *,
        what: str,
        retry: bool = True,
        ignore: tuple[str, ...] = (),
        check: bool = True,
    ) -> list[Reply]:
        """Run ``commands`` pipelined on a pooled connection and return their raw replies.

        Error replies raise (translated) unless their text starts with one of ``ignore`` or
        ``check`` is false; a lost connection is retried with the reconnect policy if ``retry``.
        """

        async def once() -> list[Reply]:
            task = asyncio.current_task()
            cancels = task.cancelling() if task is not None else 0
            try:
                conn = await self.pool.get_connection()  # type: ignore[no-untyped-call]
            except Exception as exc:
                raise self.translate(exc, what) from exc
            try:
                raise_lost_cancel(task, cancels)  # redis-py may have connected it with wait_for
                return await self.run_on(conn, list(commands), what=what, ignore=ignore, check=check)
            finally:
                await self.pool.release(conn)

        if not retry:
            return await once()
        return await self.settings.reconnect.run(once, retry_on=(ConnectionLost,), what=f"redis {what}")

    async def run_on(
        self,
        conn: AbstractConnection,
        commands: list[Command],
        *,
        what: str,
        ignore: tuple[str, ...] = (),
        check: bool = True,
        finisher: Finisher | None = None,
    ) -> list[Reply]:
        """One round trip on ``conn``, reloading the scripts once if the server forgot them.

        ``finisher``: see :func:`~polybus_redis._connection.roundtrip`.
        """
        try:
            replies = await roundtrip(conn, commands, finisher)
            if any(isinstance(r, NoScriptError) for r in replies):
                await roundtrip(conn, [["SCRIPT", "LOAD", s.text] for s in SCRIPTS])
                replies = await roundtrip(conn, commands, finisher)
        except Exception as exc:
            raise self.translate(exc, what) from exc
        if check:
            for reply in replies:
                if isinstance(reply, ResponseError) and not str(reply).startswith(ignore):
                    raise self.translate(reply, what) from reply
        return replies

    async def _load_scripts(self) -> None:
        await self.execute([["SCRIPT", "LOAD", s.text] for s in SCRIPTS], what="load scripts", retry=False)

    def spawn(self, commands: list[Command], what: str) -> None:
        """Run ``commands`` in the background, logging (not raising) a failure."""

        async def run() -> None:
            try:
                await self.execute(commands, what=what, retry=False)
            except Exception as exc:
                log.debug("redis %s failed: %s", what, exc)

        task = asyncio.get_running_loop().create_task(run())
        self._background.add(task)
        task.add_done_callback(self._background.discard)


class RedisTopic(Topic):
    """A stream. ``ensure()`` creates it empty; ``delete()`` drops it with its groups."""

    broker: RedisBroker
    consumer_options = ConsumerOptions

    @property
    def key(self) -> str:
        """The stream's Redis key."""
        return self.broker.stream_key(self.name)

    async def _ensure(self) -> None:
        await self.broker.execute([ENSURE.command([self.key], [])], what=f"ensure topic {self.name!r}")

    async def _delete(self) -> None:
        exists, _ = await self.broker.execute(
            [["EXISTS", self.key], ["DEL", self.key, due_key(self.key)]], what=f"delete topic {self.name!r}"
        )
        if not exists:
            raise NotFoundError(f"topic {self.name!r} does not exist on {self.broker.display_url}")

    async def _stats(self) -> TopicStats:
        (reply,) = await self.broker.execute(
            [STATS.command([self.key], [PARKED])], what=f"stats of topic {self.name!r}"
        )
        if reply is None:
            raise NotFoundError(f"topic {self.name!r} does not exist on {self.broker.display_url}")
        groups: dict[str, GroupStats] = {}
        for name, pending, lag, parked in reply[1:]:
            groups[name.decode()] = GroupStats(
                backlog=None if lag < 0 else lag + parked, in_flight=pending - parked
            )
        return TopicStats(topic=self.name, groups=groups, messages=reply[0])

    def _producer(self, options: Any) -> RedisProducer:
        return RedisProducer(self)

    def _consumer(
        self, group: str | None, prefetch: int, start: Start, options: ConsumerOptions
    ) -> RedisConsumer | RedisListener:
        if group is None:
            return RedisListener(self, prefetch, start)
        return RedisConsumer(self, group, prefetch, start, name=options.name)
