"""Request-reply: :class:`Requester` sends requests and waits for their replies; :class:`RemoteError`
is what a responder's failure becomes on the requester's side.

One requester holds one inbox (``broker.inbox()``: the broker's native reply path, or a topic of its
own where the broker has none) and one reader task that matches each reply to its waiting request
by the ``polybus-correlation-id`` header. A request that gets no reply within its timeout raises
:class:`polybus.OperationTimeout` and leaves nothing behind; a reply that comes late, twice or for
another requester is dropped and counted in :attr:`Requester.stats`, never handed to the wrong
caller. The responder is any consumer that sends ``broker.reply(request.headers[REPLY_TO_HEADER],
...)`` with the request's correlation id, usually a ``polybus.App`` handler whose return value is the
reply. Imports ``polybus`` and ``polybus_patterns._lifecycle`` only.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import itertools
import logging
import os
from typing import Any

import polybus
from polybus import CORRELATION_HEADER, ERROR_HEADER, ERROR_TYPE_HEADER
from polybus_patterns._lifecycle import AsyncContext

__all__ = ["RemoteError", "Requester", "RequesterStats"]

log = logging.getLogger("polybus.patterns")

REMEMBERED = 4096
"""Correlation ids of finished requests kept (oldest forgotten first) to tell a late reply or a
duplicate from a foreign one; memory stays bounded however many requests time out."""


class RemoteError(polybus.PolybusError):
    """The responder's handler raised: :attr:`type` is the exception's qualified name there
    (``"module.QualName"``), :attr:`message` its text (bounded by the responder)."""

    def __init__(self, type: str, message: str, reply: polybus.Delivery | None = None) -> None:
        super().__init__(f"the responder failed: {type}: {message}")
        self.type = type
        self.message = message
        self.reply = reply
        """The error reply itself (its headers say more)."""


@dataclasses.dataclass
class RequesterStats:
    """What a :class:`Requester` counted since it opened."""

    sent: int = 0
    """Requests sent (confirmed by the broker)."""
    replied: int = 0
    """Requests that got their reply (an error reply included)."""
    timed_out: int = 0
    """Requests that raised :class:`polybus.OperationTimeout`."""
    late: int = 0
    """Replies dropped because their request had timed out (or was cancelled) already."""
    duplicate: int = 0
    """Replies dropped because their request had its reply already."""
    foreign: int = 0
    """Replies dropped because no request of this requester matches them."""

    @property
    def dropped(self) -> int:
        """Every reply dropped: late, duplicate and foreign ones."""
        return self.late + self.duplicate + self.foreign


class Requester(AsyncContext):
    """Sends requests and returns their replies. Use as ``async with Requester(broker) as requester``.

    ``reply = await requester.request("quotes", QuoteRequest(...), timeout=5.0)`` returns the reply
    (a settled :class:`polybus.Delivery`: ``reply.decode(Quote)``); it raises
    :class:`polybus.OperationTimeout` when none came within ``timeout`` seconds and
    :class:`RemoteError` when the responder's handler raised. Any number of tasks may call
    :meth:`request` at once.
    """

    def __init__(self, broker: polybus.Broker) -> None:
        self.broker = broker
        self.stats = RequesterStats()
        """Counters of requests and of dropped replies."""
        self._inbox: polybus.Inbox | None = None
        self._reader: asyncio.Task[None] | None = None
        self._pending: dict[str, asyncio.Future[polybus.Delivery]] = {}
        self._finished: collections.OrderedDict[str, bool] = collections.OrderedDict()  # id -> answered
        self._prefix = os.urandom(8).hex() + "-"
        self._counter = itertools.count(1)
        self._closed = False

    def __repr__(self) -> str:
        state = " closed" if self._closed else f" pending={len(self._pending)}"
        return f"<Requester on {self.broker.display_url}{state}>"

    @property
    def pending(self) -> int:
        """Requests waiting for their reply now."""
        return len(self._pending)

    @property
    def dropped(self) -> int:
        """Replies dropped so far (``stats.dropped``)."""
        return self.stats.dropped

    async def open(self) -> None:
        """Open the inbox and start reading replies (``async with`` does it; so does a first request)."""
        if self._closed:
            raise polybus.ClosedError(f"{self!r} is closed; create a new one")
        if self._inbox is not None:
            return
        inbox = self.broker.inbox()
        await inbox.open()
        self._inbox = inbox
        self._reader = asyncio.get_running_loop().create_task(self._read(inbox), name=f"{self!r} reader")

    async def request(
        self,
        topic: str,
        body: Any,
        *,
        timeout: float,
        key: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> polybus.Delivery:
        """Send ``body`` to ``topic`` as a request and return its reply (settled already).

        ``body`` is anything ``Producer.send`` takes; ``timeout`` (seconds) bounds the whole call,
        the send included. Raises :class:`polybus.OperationTimeout` after ``timeout``,
        :class:`RemoteError` for an error reply, :class:`polybus.ClosedError` once closed.
        """
        if self._inbox is None:
            await self.open()
        inbox = self._inbox
        if self._closed or inbox is None:
            raise polybus.ClosedError(f"{self!r} is closed; create a new one")
        correlation = f"{self._prefix}{next(self._counter):x}"
        if isinstance(body, polybus.Message):
            message = body
            message.headers.update(headers or {})
            message.key = key if key is not None else message.key
        else:
            message = polybus.Message.of(body, key=key, headers=headers)
        message.headers[CORRELATION_HEADER] = correlation
        future: asyncio.Future[polybus.Delivery] = asyncio.get_running_loop().create_future()
        self._pending[correlation] = future
        answered = False
        try:
            async with asyncio.timeout(timeout):
                await inbox.request(topic, message)
                self.stats.sent += 1
                reply = await future
            answered = True
        except TimeoutError:
            self.stats.timed_out += 1
            raise polybus.OperationTimeout(
                f"no reply to request {message.id} on topic {topic!r} within {timeout}s"
            ) from None
        finally:
            del self._pending[correlation]
            self._remember(correlation, answered)
        self.stats.replied += 1
        error_type = reply.headers.get(ERROR_TYPE_HEADER)
        if error_type is not None:
            raise RemoteError(error_type, reply.headers.get(ERROR_HEADER, ""), reply)
        return reply

    def _remember(self, correlation: str, answered: bool) -> None:
        finished = self._finished
        finished[correlation] = answered
        if len(finished) > REMEMBERED:
            finished.popitem(last=False)

    async def _read(self, inbox: polybus.Inbox) -> None:
        """The reader task: hands each reply to its waiting request, counts the rest."""
        pending, stats = self._pending, self.stats
        while True:
            try:
                reply = await inbox.receive(timeout=None)
            except polybus.ClosedError:
                return
            except polybus.PolybusError as exc:  # the requests waiting meanwhile time out
                log.warning("%r could not receive replies (retrying): %s", self, exc)
                await asyncio.sleep(0.5)
                continue
            if reply is None:
                continue
            correlation = reply.headers.get(CORRELATION_HEADER, "")
            future = pending.get(correlation)
            if future is not None and not future.done():
                future.set_result(reply)
            elif future is not None or self._finished.get(correlation):
                stats.duplicate += 1
            elif correlation in self._finished:
                stats.late += 1
            else:
                stats.foreign += 1
                log.debug(
                    "%r dropped a reply with correlation id %r: not one of its requests", self, correlation
                )

    async def aclose(self) -> None:
        """Stop reading replies and close the inbox; requests still waiting raise ClosedError. Idempotent."""
        if self._closed:
            return
        self._closed = True
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            await asyncio.wait({reader})  # raises CancelledError only if this close is cancelled
        for future in self._pending.values():
            if not future.done():
                future.set_exception(polybus.ClosedError(f"{self!r} was closed before the reply came"))
        inbox, self._inbox = self._inbox, None
        if inbox is not None:
            await inbox.aclose()
