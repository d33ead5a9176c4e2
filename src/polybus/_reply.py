"""Replies: the header names of request-reply, :class:`Inbox` (where one requester's replies arrive)
and the emulated reply path every broker gets unless its adapter has a native one.

A request is a message with a ``polybus-reply-to`` header naming an inbox's address and a
``polybus-correlation-id`` header; the responder sends its reply with
:meth:`polybus.Broker.reply` to that address, carrying the same correlation id. The emulation here
makes the address a topic of its own per inbox, read by a non-durable listener and deleted when the
inbox closes. Imports core modules only.
"""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING

from polybus._errors import PolybusError
from polybus._message import Message
from polybus._resource import AsyncResource

if TYPE_CHECKING:
    from polybus._broker import Broker
    from polybus._consumer import Consumer
    from polybus._delivery import Delivery
    from polybus._producer import Producer

__all__ = [
    "CAUSATION_HEADER",
    "CORRELATION_HEADER",
    "ERROR_HEADER",
    "ERROR_TYPE_HEADER",
    "INBOX_PREFIX",
    "REPLY_TO_HEADER",
    "Inbox",
    "TopicInbox",
]

REPLY_TO_HEADER = "polybus-reply-to"
"""Header of a request: the address its reply goes to (see :meth:`polybus.Broker.reply`)."""
CORRELATION_HEADER = "polybus-correlation-id"
"""Header of a request and of its reply: what matches the two."""
CAUSATION_HEADER = "polybus-causation-id"
"""Header of a message an App handler returned: the id of the message it handled."""
ERROR_TYPE_HEADER = "polybus-error-type"
"""Header of an error reply: the qualified name of the exception the responder's handler raised."""
ERROR_HEADER = "polybus-error"
"""Header of an error reply: the exception's message (bounded)."""
INBOX_PREFIX = "polybus-inbox-"
"""Names of the topics that emulated inboxes create (and delete when they close)."""


class Inbox(AsyncResource):
    """Where the replies to one requester arrive. Get one with ``broker.inbox()``; use ``async with``.

    :meth:`request` sends a message whose reply comes here (it sets the ``polybus-reply-to`` header
    to :attr:`address`); :meth:`receive` returns the next reply, already settled. Closing the inbox
    removes what it created on the broker. Adapters with a native reply path subclass it.
    """

    address: str = ""
    """Where replies to this inbox are sent: pass it to :meth:`polybus.Broker.reply`."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.address!r}{' closed' if self._closed else ''}>"

    async def request(self, topic: str, message: Message) -> str:
        """Send ``message`` to ``topic`` with this inbox as its reply address; return its id once
        the broker confirmed it."""
        if not self._opened:
            await self.open()
        self._check_open()
        message.headers[REPLY_TO_HEADER] = self.address
        return await self._request(topic, message)

    async def receive(self, timeout: float | None = None) -> Delivery | None:
        """The next reply (settled already), or ``None`` if none arrived within ``timeout`` seconds."""
        if not self._opened:
            await self.open()
        self._check_open()
        return await self._receive(timeout)

    async def _request(self, topic: str, message: Message) -> str:
        raise NotImplementedError

    async def _receive(self, timeout: float | None) -> Delivery | None:
        raise NotImplementedError


class TopicInbox(Inbox):
    """The emulated inbox: a topic of its own (``polybus-inbox-<random>``) read by a non-durable
    listener, deleted on close. A requester that crashes leaves the topic behind (see docs)."""

    def __init__(self, broker: Broker) -> None:
        super().__init__(broker)
        self.address = INBOX_PREFIX + os.urandom(8).hex()
        self._listener: Consumer | None = None
        self._producers: dict[str, Producer] = {}

    async def _open(self) -> None:
        topic = self.broker.topic(self.address)
        await topic.ensure()
        self._listener = topic.consumer(None)
        await self._listener.open()

    async def _request(self, topic: str, message: Message) -> str:
        producer = self._producers.get(topic)
        if producer is None:
            producer = self._producers[topic] = self.broker.topic(topic).producer()
        return (await producer.send_many([message]))[0]

    async def _receive(self, timeout: float | None) -> Delivery | None:
        assert self._listener is not None
        delivery = await self._listener.receive(timeout)
        if delivery is not None:
            await delivery.ack()
        return delivery

    async def _aclose(self) -> None:
        for producer in self._producers.values():
            with contextlib.suppress(PolybusError):
                await producer.aclose()
        if self._listener is not None:
            with contextlib.suppress(PolybusError):
                await self._listener.aclose()
        with contextlib.suppress(PolybusError):
            await self.broker.topic(self.address).delete()
