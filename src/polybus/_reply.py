"""Replies: the header names of request-reply, :class:`Inbox` (where one requester's replies arrive)
and the emulated reply path every broker gets unless its adapter has a native one.

A request is a message with a ``polybus-reply-to`` header naming an inbox's address and a
``polybus-correlation-id`` header; the responder sends its reply with
:meth:`polybus.Broker.reply` to that address, carrying the same correlation id.

Two kinds of inbox:

- :class:`TopicInbox`, the emulation: the address is a topic of its own (``polybus-inbox-<16 hex>``),
  read by a non-durable listener and deleted when the inbox closes. A requester that dies without
  closing leaves that topic behind (docs/request-reply.md says how to clean it up).
- :class:`PushInbox`, the base of native inboxes: the adapter subscribes to its broker's own reply
  path (a NATS inbox subject, RabbitMQ direct reply-to) and hands each reply to :meth:`PushInbox.push`.
  Nothing is created on the broker that could outlive the connection.

Requests themselves are ordinary messages sent through a producer per topic, on every broker.
Imports core modules only.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
from typing import TYPE_CHECKING, Any, cast

from polybus._delivery import Delivery, Outcome
from polybus._errors import PolybusError
from polybus._message import Message
from polybus._resource import AsyncResource

if TYPE_CHECKING:
    from polybus._broker import Broker
    from polybus._consumer import Consumer
    from polybus._producer import Producer

__all__ = [
    "CAUSATION_HEADER",
    "CORRELATION_HEADER",
    "ERROR_HEADER",
    "ERROR_TYPE_HEADER",
    "INBOX_PREFIX",
    "REPLY_TO_HEADER",
    "Inbox",
    "PushInbox",
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
    removes what it created on the broker. Adapters with a native reply path subclass
    :class:`PushInbox`.
    """

    address: str = ""
    """Where replies to this inbox are sent: pass it to :meth:`polybus.Broker.reply`."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self._request_producers: dict[str, Producer] = {}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.address!r}{' closed' if self._closed else ''}>"

    async def open(self) -> None:
        """Subscribe to the reply path (``async with`` does it, and so does first use)."""
        await super().open()
        self.broker._track(self)  # closing the broker closes the inbox (and deletes its topic)

    async def request(self, topic: str, message: Message) -> str:
        """Send ``message`` to ``topic`` with this inbox as its reply address; return its id once
        the broker confirmed it."""
        if not self._opened:
            await self.open()
        self._check_open()
        message.headers[REPLY_TO_HEADER] = self.address
        return await self._request(topic, message)

    async def receive(self, timeout: float | None = None) -> Delivery | None:
        """The next reply (settled already), or ``None`` if none arrived within ``timeout`` seconds.

        Raises :class:`~polybus.ClosedError` once the inbox is closed (also while waiting).
        """
        if not self._opened:
            await self.open()
        self._check_open()
        return await self._receive(timeout)

    async def _request(self, topic: str, message: Message) -> str:
        """Adapters, optional: send a request. The default sends through a producer per topic."""
        producer = self._request_producers.get(topic)
        if producer is None:
            producer = self._request_producers[topic] = self.broker.topic(topic).producer()
        return (await producer.send_many([message]))[0]

    async def _receive(self, timeout: float | None) -> Delivery | None:
        raise NotImplementedError

    async def _aclose(self) -> None:
        """Subclasses: release what the inbox holds, then call this (it closes the producers)."""
        self.broker._untrack(self)
        producers, self._request_producers = list(self._request_producers.values()), {}
        for producer in producers:
            with contextlib.suppress(PolybusError):
                await producer.aclose()


class TopicInbox(Inbox):
    """The emulated inbox: a topic of its own (``polybus-inbox-<random>``) read by a non-durable
    listener, deleted on close. A requester that crashes leaves the topic behind (see docs)."""

    def __init__(self, broker: Broker) -> None:
        super().__init__(broker)
        self.address = INBOX_PREFIX + os.urandom(8).hex()
        self._listener: Consumer | None = None

    async def _open(self) -> None:
        topic = self.broker.topic(self.address)
        await topic.ensure()
        listener = topic.consumer(None)
        try:
            await listener.open()
        except BaseException:
            with contextlib.suppress(PolybusError):
                await topic.delete()
            raise
        self._listener = listener

    async def _receive(self, timeout: float | None) -> Delivery | None:
        assert self._listener is not None
        delivery = await self._listener.receive(timeout)
        if delivery is not None:
            await delivery.ack()
        return delivery

    async def _aclose(self) -> None:
        await super()._aclose()
        if self._listener is not None:
            with contextlib.suppress(PolybusError):
                await self._listener.aclose()
        with contextlib.suppress(PolybusError):
            await self.broker.topic(self.address).delete()


class _Settled:
    """Stands in for the consumer of a pushed reply: it came settled, so settling it again raises
    :class:`~polybus.DeliveryStateError`, as for any settled delivery."""

    _coalesces_acks = False

    def _mark_settled(self, delivery: Delivery, outcome: Outcome) -> None:
        delivery._settle(outcome)


_SETTLED = cast("Consumer", _Settled())


class PushInbox(Inbox):
    """Base of native inboxes: the adapter subscribes to its broker's reply path in ``_open`` and
    calls :meth:`push` for each reply (from a callback, without awaiting); :meth:`receive` hands
    them out in arrival order. Subclasses set :attr:`address` and implement ``_open`` / ``_aclose``
    (calling ``super()._aclose()``); requests go through a producer per topic unless they override
    ``_request``.
    """

    def __init__(self, broker: Broker) -> None:
        super().__init__(broker)
        self._pushed: collections.deque[Delivery] = collections.deque()
        self._push_event = asyncio.Event()

    def push(
        self,
        body: bytes,
        headers: dict[str, str],
        *,
        id: str,
        key: str | None = None,
        timestamp: float,
        native: Any = None,
    ) -> None:
        """Adapters: a reply arrived (ignored once the inbox is closed)."""
        if self._closed:
            return
        delivery = Delivery(_SETTLED, id, self.address, body, headers, key, timestamp, 1, native)
        delivery.outcome = Outcome.ACK
        self._pushed.append(delivery)
        self._push_event.set()

    async def _receive(self, timeout: float | None) -> Delivery | None:
        replies = self._pushed
        if not replies:
            self._push_event.clear()
            try:
                async with asyncio.timeout(timeout):
                    await self._push_event.wait()
            except TimeoutError:
                return None
            self._check_open()
        return replies.popleft() if replies else None

    async def aclose(self) -> None:
        """Stop receiving (a ``receive()`` under way raises :class:`~polybus.ClosedError`); idempotent."""
        if self._closed:
            return
        self._push_event.set()  # wakes a receive() under way, which sees the closed state
        await super().aclose()
        self._pushed.clear()
