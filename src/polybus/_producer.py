"""``Producer``: sends messages to one topic; every send returns after the broker confirmed it.

Adapters subclass it and implement ``_publish``. Imports the core message, error and resource
modules only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar

from polybus._errors import MessageTooLargeError
from polybus._message import BYTES_HEADER_SIZE, Message, messages_of
from polybus._resource import AsyncResource

if TYPE_CHECKING:
    from polybus._topic import Topic

__all__ = ["Producer"]


class Producer(AsyncResource):
    """Sends to one topic. Use as ``async with topic.producer() as producer``.

    ``send`` and ``send_many`` return only after the broker confirmed the message(s); on an error
    they raise, and a message that raised may or may not have been stored (at-least-once: resend).
    """

    _takes_bodies: ClassVar[bool] = False
    """True when the adapter implements :meth:`_publish_bodies` (set by the class itself)."""

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        cls._takes_bodies = cls._publish_bodies is not Producer._publish_bodies

    def __init__(self, topic: Topic) -> None:
        self.topic = topic
        self._in_flight = 0
        self._idle: asyncio.Event | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} topic={self.topic.name!r}{' closed' if self._closed else ''}>"

    async def _open(self) -> None:
        await self.topic.ensure()
        self.topic.broker._track(self)

    async def aclose(self) -> None:
        """Wait for the sends under way to be confirmed (or fail), then close. Idempotent."""
        if self._closed:
            return
        self._closed = True  # refuse new sends from now on
        await self.flush()
        if self._opened:
            await self._aclose()

    async def _aclose(self) -> None:
        self.topic.broker._untrack(self)

    async def send(self, body: Any, *, key: str | None = None, headers: dict[str, str] | None = None) -> str:
        """Send one message and return its id once the broker confirmed it.

        ``body`` is bytes, str, a JSON-serialisable value or a pydantic model.
        """
        return (await self.send_many([Message.of(body, key=key, headers=headers)]))[0]

    async def send_many(self, items: Iterable[Any]) -> list[str]:
        """Send many messages in batches; return their ids once the broker confirmed all of them.

        Each item is a :class:`~polybus.Message` or a body as accepted by :meth:`send`.
        """
        if not self._opened:
            await self.open()
        self._check_open()
        limit = self.topic.broker.capabilities.max_message_size
        messages: list[Message] = []
        bodies: list[bytes] = []
        if self._takes_bodies and items.__class__ is list and all(i.__class__ is bytes for i in items):
            bodies = list(items)  # a copy: the caller may change its list while the send is under way
            # the hot path of bulk sends: the adapter builds its records from the bodies
            longest = max(map(len, bodies), default=0) + BYTES_HEADER_SIZE
            if limit is not None and longest > limit:
                raise MessageTooLargeError(longest, limit, topic=self.topic.name)
        else:
            messages, too_large = messages_of(items, limit)
            if too_large is not None:
                raise MessageTooLargeError(too_large.size, limit or 0, topic=self.topic.name)
        if not messages and not bodies:
            return []
        self._in_flight += 1
        try:
            return await (self._publish_bodies(bodies) if bodies else self._publish(messages))
        finally:
            self._in_flight -= 1
            if self._in_flight == 0 and self._idle is not None:
                self._idle.set()

    async def flush(self) -> None:
        """Wait until every send under way is confirmed or has failed."""
        while self._in_flight:
            if self._idle is None:
                self._idle = asyncio.Event()
            self._idle.clear()
            await self._idle.wait()

    async def _publish(self, messages: list[Message]) -> list[str]:
        """Adapters: store ``messages`` on the broker, wait for its confirmation, return their ids."""
        raise NotImplementedError

    async def _publish_bodies(self, bodies: list[bytes]) -> list[str]:
        """Adapters, optional (implementing it opts in): a ``send_many`` of a list of ``bytes`` comes
        here instead of :meth:`_publish`. Store each body exactly as ``_publish`` would store
        ``Message.of(body)`` (content type ``application/octet-stream``, a new id, sent now); the
        sizes are checked already. Return the new ids once the broker confirmed every body."""
        raise NotImplementedError
