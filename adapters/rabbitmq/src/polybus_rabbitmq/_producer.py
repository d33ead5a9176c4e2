"""``RabbitProducer``: confirmed, mandatory publishes to the topic's exchange, pipelined in windows.

``send_many`` keeps up to ``publish_window`` messages unconfirmed at once. When the connection is
lost, the messages not yet confirmed are sent again on a new connection (the reconnect policy's
backoff); when the policy gives up the send raises. A message RabbitMQ returns as unroutable (no
group exists yet) is dropped or raises, as ``on_unroutable`` says: never silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

import aio_pika.abc
import aiormq.abc
from pamqp import commands as spec

from polybus import BrokerConnectionError, PublishError
from polybus.adapter import Message, Producer
from polybus_rabbitmq._compat import PUBLISH_NO_DRAIN
from polybus_rabbitmq._errors import CONNECTION_ERRORS, translate
from polybus_rabbitmq._wire import properties_for

if TYPE_CHECKING:
    from polybus_rabbitmq._topic import RabbitTopic

__all__ = ["RabbitProducer"]

log = logging.getLogger("polybus.rabbitmq")

# Failures after which the same message may be published again on a new channel.
_RETRYABLE = (BrokerConnectionError,)


class RabbitProducer(Producer):
    """Publishes to one topic's exchange on its own confirmed channel."""

    topic: RabbitTopic

    def __init__(self, topic: RabbitTopic, queue: str | None = None) -> None:
        super().__init__(topic)
        self._queue = queue
        """A group's queue to publish to through the default exchange (``send_to_group``), or ``None``."""
        self._channel: aio_pika.abc.AbstractChannel | None = None
        self._channel_lock = asyncio.Lock()
        self.unroutable = 0
        """Messages RabbitMQ reported as reaching no group (dropped under ``on_unroutable=drop``)."""

    async def _underlay(self) -> aiormq.abc.AbstractChannel:
        channel = self._channel
        if channel is None or channel.is_closed:
            async with self._channel_lock:
                channel = self._channel
                if channel is None or channel.is_closed:
                    channel = self._channel = await self.topic.broker.channel(confirms=True)
        return await channel.get_underlay_channel()

    async def _publish(self, messages: list[Message]) -> list[str]:
        broker = self.topic.broker
        settings = broker.settings
        pending = messages
        unroutable: list[Message] = []

        async def attempt() -> None:
            nonlocal pending
            underlay = await self._underlay()
            failed: list[Message] = []
            error: BaseException | None = None
            window = settings.publish_window
            for start in range(0, len(pending), window):
                chunk = pending[start : start + window]
                results = await asyncio.gather(
                    *(self._publish_one(underlay, m, settings.operation_timeout) for m in chunk),
                    return_exceptions=True,
                )
                for message, result in zip(chunk, results, strict=True):
                    if isinstance(result, spec.Basic.Ack):
                        continue
                    if isinstance(result, BaseException):
                        if isinstance(result, asyncio.CancelledError):
                            task = asyncio.current_task()
                            if task is not None and task.cancelling():
                                raise result  # we are cancelled
                            # aiormq cancels the confirmations still awaited when its connection
                            # closes (a missed heartbeat): the connection was lost, resend
                            result = ConnectionError("the connection closed before the broker confirmed")
                        error = error or result
                        failed.append(message)
                    elif isinstance(result, spec.Basic.Nack):
                        raise PublishError(
                            f"RabbitMQ refused message {message.id!r} for topic {self.topic.name!r}"
                        )
                    else:  # returned: routed to no queue
                        unroutable.append(message)
                if error is not None:  # stop after the first broken window, resend the rest later
                    failed.extend(pending[start + window :])
                    break
            pending = failed
            if error is not None:
                if not isinstance(error, CONNECTION_ERRORS):
                    raise PublishError(f"publishing to {self.topic.name!r} failed: {error!r}") from error
                raise translate(error, f"publishing to {self.topic.name!r}", broker.display_url) from error

        await settings.reconnect.run(attempt, retry_on=_RETRYABLE, what=f"publishing to {self.topic.name!r}")
        if unroutable:
            self.unroutable += len(unroutable)
            if settings.on_unroutable == "raise":
                raise PublishError(
                    f"{len(unroutable)} message(s) sent to topic {self.topic.name!r} reached no group: "
                    "no group exists yet (on_unroutable=raise)"
                )
            log.debug("topic %r has no group: %d message(s) reached nobody", self.topic.name, len(unroutable))
        return [m.id for m in messages]

    async def _publish_one(self, underlay: Any, message: Message, timeout: float) -> Any:
        # ``underlay`` is an aiormq channel; PUBLISH_NO_DRAIN (``wait=False``) skips a drain per message
        if self._queue is not None:  # one group: its queue, by name, through the default exchange
            exchange, routing_key = "", self._queue
        else:  # the key travels in a header; as routing key too where it fits AMQP's 255-byte limit
            exchange = self.topic.exchange
            routing_key = message.key if message.key and len(message.key.encode()) <= 255 else ""
        return await underlay.basic_publish(
            message.body,
            exchange=exchange,
            routing_key=routing_key,
            properties=properties_for(message),
            mandatory=True,
            timeout=timeout,
            **PUBLISH_NO_DRAIN,
        )

    async def _aclose(self) -> None:
        await super()._aclose()  # the base waited for the sends under way
        channel, self._channel = self._channel, None
        if channel is not None and not channel.is_closed:
            with contextlib.suppress(*CONNECTION_ERRORS):
                await channel.close()
