"""``RabbitBroker``: one AMQP connection, re-established with a ``ReconnectPolicy`` when it is lost.

The broker owns the connection, hands out channels (one per producer, one per consumer, a short-lived
one per topology operation) and declares what RabbitMQ offers as a frozen ``Capabilities``.
Imports aio-pika and the adapter's own modules.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import aio_pika
import aio_pika.abc
import aiormq.abc

from polybus import BrokerConnectionError
from polybus.adapter import Broker, Capabilities, Message, Support
from polybus_rabbitmq._compat import quiet_handled_errors, server_version, transport_alive
from polybus_rabbitmq._errors import CONNECTION_ERRORS, translate, translating
from polybus_rabbitmq._inbox import RabbitInbox, send_reply
from polybus_rabbitmq._redeliver import Redeliverer
from polybus_rabbitmq._settings import RabbitSettings
from polybus_rabbitmq._topic import RabbitTopic

__all__ = ["RabbitBroker"]

log = logging.getLogger("polybus.rabbitmq")
T = TypeVar("T")


def _capabilities(settings: RabbitSettings) -> Capabilities:
    counted = Support.EMULATED if settings.queue_type == "classic" else Support.NATIVE
    return Capabilities(
        competing_consumers=Support.NATIVE,
        fan_out=Support.NATIVE,
        ordering_per_key=Support.NATIVE,
        delayed_nack=Support.EMULATED,
        delivery_count=counted,
        dead_letter=Support.EMULATED,  # dead letters per group: polybus_patterns, from a topic
        replay=Support.UNSUPPORTED,
        priority=Support.UNSUPPORTED,
        dedup=Support.UNSUPPORTED,
        backlog_stats=Support.NATIVE,
        max_message_size=settings.max_message_size,
        group_send=Support.NATIVE,  # the group's queue, through the default exchange
        request_reply=Support.NATIVE,
    )


def _alive(connection: aio_pika.abc.AbstractConnection) -> bool:
    return not connection.is_closed and transport_alive(connection)


class RabbitBroker(Broker):
    """A RabbitMQ connection: ``polybus.connect("amqp://guest:guest@localhost:5672/")``.

    Topics are durable fanout exchanges, groups durable queues bound to them (quorum queues where
    the server has them). Options: see :class:`~polybus_rabbitmq.RabbitSettings`.
    """

    scheme = "amqp"
    settings: RabbitSettings
    settings_class = RabbitSettings

    def __init__(self, settings: RabbitSettings | None = None) -> None:
        super().__init__(settings)
        self.capabilities = _capabilities(self.settings)
        self._connection: aio_pika.abc.AbstractConnection | None = None
        self._connection_lock = asyncio.Lock()
        self._server_version: tuple[int, ...] = ()
        self.generation = 0
        """Incremented on every (re)connection; channels of an older generation are dead."""
        self.redeliverer = Redeliverer(self)
        self._reply_channel: aio_pika.abc.AbstractChannel | None = None
        self._reply_lock = asyncio.Lock()
        self.registry_lock = asyncio.Lock()
        """Serializes this process's use of group registries (their lock is held per connection)."""

    @property
    def display_url(self) -> str:
        return self.settings.display_url()

    @property
    def uses_quorum(self) -> bool:
        """Whether group (and delay) queues are quorum queues on this server."""
        if self.settings.queue_type == "auto":
            return not self._server_version or self._server_version >= (3, 8)
        return self.settings.queue_type == "quorum"

    def _topic(self, name: str) -> RabbitTopic:
        return RabbitTopic(self, name)

    # -- replies (direct reply-to: see _inbox) ----------------------------------------------------

    def _inbox(self) -> RabbitInbox:
        return RabbitInbox(self)

    async def _reply(self, address: str, message: Message) -> None:
        await send_reply(self, address, message)

    async def reply_channel(self) -> aiormq.abc.AbstractChannel:
        """The confirmed channel replies are published on (opened on first use, again after a loss)."""
        channel = self._reply_channel
        if channel is None or channel.is_closed:
            async with self._reply_lock:
                channel = self._reply_channel
                if channel is None or channel.is_closed:
                    channel = self._reply_channel = await self.channel(confirms=True)
        return await channel.get_underlay_channel()

    # -- connection ------------------------------------------------------------------------------

    async def _open(self) -> None:
        await self._connect()

    async def _connect(self) -> None:
        quiet_handled_errors()
        settings = self.settings
        secret = settings.password.get_secret_value()
        try:
            connection = await aio_pika.connect(
                host=settings.host,
                port=settings.port,
                login=settings.username,
                password=secret,
                virtualhost=settings.vhost,
                ssl=settings.tls,
                ssl_context=settings.ssl_context(),
                timeout=settings.connect_timeout,
                client_properties={"connection_name": settings.client_name},
                heartbeat=settings.heartbeat,
            )
        except CONNECTION_ERRORS as exc:
            error = translate(exc, "connecting", self.display_url, secret)
            # The client's own exception may quote the URL it built, password included.
            leaks = secret and any(secret in str(part) for part in (exc, *exc.args))
            raise error from (None if leaks else exc)
        self._server_version = server_version(connection)
        connection.close_callbacks.add(self._on_connection_closed)
        self._connection = connection
        self.generation += 1

    def _on_connection_closed(self, sender: Any, exc: BaseException | None = None) -> None:
        if not self.closed:
            reason = type(exc).__name__ if exc else "closed"
            log.warning("connection to %s lost: %s", self.display_url, reason)

    async def connection(self) -> aio_pika.abc.AbstractConnection:
        """The live connection, re-established with the reconnect policy if it was lost."""
        self._check_open()
        connection = self._connection
        if connection is not None and _alive(connection):
            return connection
        async with self._connection_lock:
            connection = self._connection
            if connection is None or not _alive(connection):
                self._check_open()
                await self.settings.reconnect.run(self._connect, what=f"reconnecting to {self.display_url}")
        assert self._connection is not None
        return self._connection

    async def channel(self, *, confirms: bool = False) -> aio_pika.abc.AbstractChannel:
        """A new channel on the live connection (with publisher confirms if ``confirms``)."""
        connection = await self.connection()
        with translating("opening a channel", self.display_url):
            channel = connection.channel(publisher_confirms=confirms, on_return_raises=False)
            await channel.initialize(timeout=self.settings.operation_timeout)
        return channel

    @contextlib.asynccontextmanager
    async def _admin_channel(self, confirms: bool) -> AsyncIterator[aio_pika.abc.AbstractChannel]:
        channel = await self.channel(confirms=confirms)
        try:
            yield channel
        finally:
            if not channel.is_closed:
                with contextlib.suppress(*CONNECTION_ERRORS):
                    await channel.close()

    async def admin_once(
        self,
        what: str,
        operation: Callable[[aio_pika.abc.AbstractChannel], Awaitable[T]],
        *,
        confirms: bool = False,
    ) -> T:
        """Run a topology ``operation`` on a fresh channel (closed after), within ``operation_timeout``."""
        async with self._admin_channel(confirms) as channel:
            with translating(what, self.display_url):
                return await asyncio.wait_for(operation(channel), self.settings.operation_timeout)

    async def admin(self, what: str, operation: Callable[[aio_pika.abc.AbstractChannel], Awaitable[T]]) -> T:
        """:meth:`admin_once`, retried across a lost connection with the reconnect policy."""
        return await self.settings.reconnect.run(
            lambda: self.admin_once(what, operation), retry_on=(BrokerConnectionError,), what=what
        )

    async def _aclose(self) -> None:
        await self.redeliverer.aclose()
        reply_channel, self._reply_channel = self._reply_channel, None
        if reply_channel is not None and not reply_channel.is_closed:
            with contextlib.suppress(*CONNECTION_ERRORS):
                await reply_channel.close()
        connection, self._connection = self._connection, None
        if connection is not None and not connection.is_closed:
            with contextlib.suppress(*CONNECTION_ERRORS):
                await connection.close()
