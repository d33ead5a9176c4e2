"""``RabbitInbox``: request-reply on RabbitMQ's direct reply-to (``amq.rabbitmq.reply-to``).

An inbox is one channel (with publisher confirms) that consumes the pseudo-queue
``amq.rabbitmq.reply-to`` without acks and publishes its requests itself, with the AMQP ``reply_to``
property set to that name. RabbitMQ rewrites the property into an address of that channel
(``amq.rabbitmq.reply-to.<token>``); the responder's consumer maps it to the ``polybus-reply-to``
header (:class:`~polybus_rabbitmq._wire.Incoming`), and :func:`send_reply` publishes the reply to the
default exchange with that address as routing key. No queue is declared: nothing outlives the
channel, and a reply to a channel that is gone is dropped by RabbitMQ. Replies are not stored (a
reply lost with a connection makes its request time out). Requests are ordinary messages of the
topic (stored, confirmed, redelivered like any other).
Imports aio-pika, polybus core and this package's modules.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

import aio_pika.abc
import aiormq.abc
from pamqp import commands as spec

from polybus import ConfigurationError, PublishError
from polybus.adapter import REPLY_TO_HEADER, Message, PushInbox
from polybus_rabbitmq._compat import PUBLISH_NO_DRAIN
from polybus_rabbitmq._errors import CONNECTION_ERRORS, translating
from polybus_rabbitmq._wire import DIRECT_REPLY_TO, Incoming, exchange_name, properties_for

if TYPE_CHECKING:
    from polybus_rabbitmq._broker import RabbitBroker

__all__ = ["RabbitInbox", "send_reply"]

log = logging.getLogger("polybus.rabbitmq")


class RabbitInbox(PushInbox):
    """An inbox on direct reply-to (see the module docstring)."""

    broker: RabbitBroker

    def __init__(self, broker: RabbitBroker) -> None:
        super().__init__(broker)
        self.address = DIRECT_REPLY_TO
        self._channel: aio_pika.abc.AbstractChannel | None = None
        self._underlay: aiormq.abc.AbstractChannel | None = None
        self._lock = asyncio.Lock()
        self._topics: set[str] = set()
        self.unroutable = 0
        """Requests RabbitMQ reported as reaching no group (dropped under ``on_unroutable=drop``)."""

    async def _open(self) -> None:
        await self._live()

    async def _live(self) -> aiormq.abc.AbstractChannel:
        """The inbox's channel, consuming its replies; opened again if the connection was lost
        (replies to requests sent on the old one are lost: those requests time out)."""
        underlay = self._underlay
        if underlay is not None and not underlay.is_closed:
            return underlay
        async with self._lock:
            if self._underlay is not None and not self._underlay.is_closed:
                return self._underlay
            broker = self.broker
            channel = await broker.channel(confirms=True)
            try:
                with translating("opening an inbox", broker.display_url):
                    underlay = await channel.get_underlay_channel()
                    await underlay.basic_consume(DIRECT_REPLY_TO, self._on_reply, no_ack=True)
            except BaseException:
                with contextlib.suppress(*CONNECTION_ERRORS):
                    await channel.close()
                raise
            self._channel, self._underlay = channel, underlay
            return underlay

    async def _on_reply(self, message: aiormq.abc.DeliveredMessage) -> None:
        frame: Any = message.delivery
        incoming = Incoming(
            message.header.properties, message.body, routing_key=frame.routing_key, redelivered=False
        )
        self.push(
            message.body, incoming.headers, id=incoming.id, key=incoming.key, timestamp=incoming.timestamp
        )

    async def _request(self, topic: str, message: Message) -> str:
        broker = self.broker
        if topic not in self._topics:  # publishing to a missing exchange would close the channel
            await broker.topic(topic).ensure()
            self._topics.add(topic)
        properties = properties_for(message)
        assert properties.headers is not None
        properties.headers.pop(REPLY_TO_HEADER, None)  # the property carries it, rewritten by RabbitMQ
        properties.reply_to = DIRECT_REPLY_TO
        underlay = await self._live()
        with translating(f"sending a request to {topic!r}", broker.display_url):
            result = await underlay.basic_publish(
                message.body,
                exchange=exchange_name(topic),
                routing_key=message.key if message.key and len(message.key.encode()) <= 255 else "",
                properties=properties,
                mandatory=True,
                timeout=broker.settings.operation_timeout,
                **PUBLISH_NO_DRAIN,
            )
        if isinstance(result, spec.Basic.Nack):
            raise PublishError(f"RabbitMQ refused request {message.id!r} for topic {topic!r}")
        if not isinstance(result, spec.Basic.Ack):  # returned: no group on the topic
            self.unroutable += 1
            if broker.settings.on_unroutable == "raise":
                raise PublishError(f"request {message.id!r} to topic {topic!r} reached no group")
            log.debug("request %r to topic %r reached no group", message.id, topic)
        return message.id

    async def _aclose(self) -> None:
        channel, self._channel, self._underlay = self._channel, None, None
        if channel is not None and not channel.is_closed:
            with contextlib.suppress(*CONNECTION_ERRORS):
                await channel.close()
        await super()._aclose()


async def send_reply(broker: RabbitBroker, address: str, message: Message) -> None:
    """Publish ``message`` to the direct reply-to ``address`` (through the default exchange)."""
    if not address.startswith(DIRECT_REPLY_TO + "."):
        raise ConfigurationError(
            f"{address!r} is not a RabbitMQ reply address (they start with {DIRECT_REPLY_TO + '.'!r})"
        )
    underlay = await broker.reply_channel()
    with translating(f"reply to {address!r}", broker.display_url):
        result = await underlay.basic_publish(
            message.body,
            exchange="",
            routing_key=address,
            properties=properties_for(message),
            timeout=broker.settings.operation_timeout,
            **PUBLISH_NO_DRAIN,
        )
    if isinstance(result, spec.Basic.Nack):
        raise PublishError(f"RabbitMQ refused the reply {message.id!r}")
