"""``Broker``: a connection to one message broker, made by ``polybus.connect(url)``.

Adapters subclass it: set ``scheme`` and ``capabilities``, implement ``_open``, ``_aclose`` and
``_topic``; an adapter with a native reply path also overrides ``_inbox`` and ``_reply``. The
base closes every producer and consumer still open when the broker closes.
Imports core modules only.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, ClassVar, Self

from polybus._adapter_settings import AdapterSettings
from polybus._capabilities import Capabilities
from polybus._errors import ConfigurationError, MessageTooLargeError, NotFoundError, PolybusError
from polybus._message import Message
from polybus._producer import Producer
from polybus._reply import INBOX_PREFIX, Inbox, TopicInbox
from polybus._resource import AsyncResource
from polybus._topic import Topic, check_name

__all__ = ["Broker"]

log = logging.getLogger("polybus")

REPLY_PRODUCERS = 32
"""Producers the emulated reply path keeps open, one per recent reply address."""


class Broker(AsyncResource):
    """A connection to a broker. Use as ``async with polybus.connect(url) as broker``.

    Connecting happens on entering (or first use); ``aclose()`` closes every producer and
    consumer made from it, then the connection.
    """

    scheme: ClassVar[str] = ""
    capabilities: Capabilities
    default_prefetch: int = 100
    settings: AdapterSettings
    """The adapter's settings (its own subclass of ``polybus.adapter.AdapterSettings``)."""
    settings_class: ClassVar[type[AdapterSettings]] = AdapterSettings
    """Adapters: their settings model, which :meth:`from_url` builds."""

    @classmethod
    def from_url(cls, url: str, **options: Any) -> Self:
        """A broker for ``url``, keyword ``options`` overriding the URL's (the entry point's factory).

        Raises :class:`~polybus.ConfigurationError` naming a bad option, never showing a password.
        """
        return cls(cls.settings_class.from_url(url, **options))

    def __init__(self, settings: AdapterSettings | None = None) -> None:
        """Adapters: pass the settings (``None``: the defaults); ``default_prefetch`` comes from them."""
        self._children: set[AsyncResource] = set()
        self._reply_producers: dict[str, Producer] = {}
        if settings is None and self.settings_class is AdapterSettings:
            return  # an adapter that keeps its settings itself
        self.settings = self.settings_class() if settings is None else settings
        self.default_prefetch = self.settings.prefetch

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.display_url}{' closed' if self._closed else ''}>"

    @property
    def display_url(self) -> str:
        """The broker URL with any password replaced by ``***``."""
        return f"{self.scheme}://"

    def topic(self, name: str) -> Topic:
        """The topic called ``name`` (nothing is created until it is used or ``ensure()``-d)."""
        self._check_open()
        return self._topic(check_name(name, "topic"))

    def _topic(self, name: str) -> Topic:
        raise NotImplementedError

    def inbox(self) -> Inbox:
        """A new inbox: where the replies to one requester arrive (use it as an async context manager).

        ``capabilities.request_reply`` says whether the broker's own reply path carries them
        (``native``) or a topic per inbox, deleted when it closes (``emulated``).
        """
        self._check_open()
        return self._inbox()

    async def reply(self, address: str, message: Message) -> None:
        """Send ``message`` to the inbox at ``address`` (a request's ``polybus-reply-to`` header).

        Returns once the broker took it. A reply to an inbox that is gone is dropped (logged at debug
        level), never an error the responder must handle; an address that is no inbox address of
        this broker raises :class:`~polybus.ConfigurationError` (a request cannot make a responder
        send to an arbitrary topic).
        """
        self._check_open()
        limit = self.capabilities.max_message_size
        if limit is not None and not message.fits(limit):
            raise MessageTooLargeError(message.size, limit, topic=address)
        await self._reply(address, message)

    def _inbox(self) -> Inbox:
        """Adapters with a native reply path: their own :class:`~polybus.adapter.PushInbox`."""
        return TopicInbox(self)

    async def _reply(self, address: str, message: Message) -> None:
        """Adapters with a native reply path: send ``message`` to ``address``.

        The emulation sends to the inbox's topic, keeping producers for the last few addresses. It
        never creates that topic: before the first reply to an address it checks that the topic
        exists, and a send that finds it deleted drops the reply.
        """
        if not address.startswith(INBOX_PREFIX):
            raise ConfigurationError(
                f"{address!r} is not an inbox address (they start with {INBOX_PREFIX!r})"
            )
        producers = self._reply_producers
        producer = producers.pop(address, None)
        if producer is None:
            topic = self.topic(address)
            try:
                await topic.stats()  # the cheapest portable "does it exist?"
            except NotFoundError:
                log.debug("reply to %r dropped: that inbox is closed", address)
                return
            producer = topic.producer()
            if len(producers) >= REPLY_PRODUCERS:
                oldest = next(iter(producers))
                with contextlib.suppress(PolybusError):
                    await producers.pop(oldest).aclose()
        producers[address] = producer  # most recently used last
        try:
            await producer.send_many([message])
        except NotFoundError:
            log.debug("reply to %r dropped: that inbox was closed", address)
            if producers.get(address) is producer:
                del producers[address]
            with contextlib.suppress(PolybusError):
                await producer.aclose()

    def _track(self, child: AsyncResource) -> None:
        self._children.add(child)

    def _untrack(self, child: AsyncResource) -> None:
        self._children.discard(child)

    async def aclose(self) -> None:
        """Close every producer and consumer made from this broker, then the connection. Idempotent."""
        if self._closed:
            return
        self._reply_producers.clear()  # children: closed below
        for child in list(self._children):
            await child.aclose()
        await super().aclose()
