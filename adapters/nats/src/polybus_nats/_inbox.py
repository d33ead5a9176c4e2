"""``NatsInbox``: request-reply on NATS' own reply path (core NATS inbox subjects).

An inbox subscribes to a fresh subject ``_INBOX.<random>`` on the broker's connection; that
subject is its address. Requests are ordinary JetStream messages (stored, acked, redelivered like
any other) carrying the address in the ``polybus-reply-to`` header; :func:`send_reply` publishes a
reply on core NATS to that subject. Nothing is created on the server: a subscription ends with its
inbox or its connection, and a reply to a subject nobody listens on is dropped by the server.
Replies are at-most-once (core NATS): one lost with a connection makes its request time out.
Imports polybus core, nats-py and this package's modules.
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING

import nats.errors
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from polybus import ConfigurationError, Message
from polybus.adapter import PushInbox, new_message_id
from polybus_nats._errors import boundary
from polybus_nats._wire import user_headers, wire_headers

if TYPE_CHECKING:
    from polybus_nats._broker import NatsBroker

__all__ = ["INBOX_SUBJECT_PREFIX", "NatsInbox", "send_reply"]

INBOX_SUBJECT_PREFIX = "_INBOX."
"""Subjects of inboxes (nats-py's default inbox prefix): the only addresses a reply may go to."""


class NatsInbox(PushInbox):
    """An inbox on a core NATS subscription (see the module docstring)."""

    broker: NatsBroker

    def __init__(self, broker: NatsBroker) -> None:
        super().__init__(broker)
        self._sub: Subscription | None = None

    async def _open(self) -> None:
        await self.broker.open()
        nc = self.broker.nc
        self.address = nc.new_inbox()
        with boundary("opening an inbox"):
            # no pending limits: replies only come for requests this process sent
            self._sub = await nc.subscribe(
                self.address, cb=self._on_reply, pending_msgs_limit=0, pending_bytes_limit=0
            )

    async def _on_reply(self, msg: Msg) -> None:
        headers, key, msg_id = user_headers(msg.headers)
        self.push(msg.data, headers, id=msg_id or new_message_id(), key=key, timestamp=time.time())

    async def _aclose(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            # a connection closing or closed took the subscription with it
            with contextlib.suppress(nats.errors.Error, OSError):
                await sub.unsubscribe()
        await super()._aclose()


async def send_reply(broker: NatsBroker, address: str, message: Message) -> None:
    """Publish ``message`` on core NATS to the inbox subject ``address``."""
    if not address.startswith(INBOX_SUBJECT_PREFIX) or " " in address:
        raise ConfigurationError(
            f"{address!r} is not a NATS inbox address (they start with {INBOX_SUBJECT_PREFIX!r})"
        )
    with boundary(f"reply to {address!r}"):
        await broker.nc.publish(address, message.body, headers=wire_headers(message))
