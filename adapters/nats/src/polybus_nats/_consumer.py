"""``NatsConsumer``: a member of a group (a durable JetStream pull consumer) or a group-less listener.

Flow control is by pull request: at most one request is outstanding, and it asks for no more
messages than the prefetch bound has room for, so the client never holds more than ``prefetch``
unsettled messages (and nats-py's slow-consumer limits cannot drop any). Each request has its own
reply subject, so the server's "request over" status (404/408/409) is matched to it. Held
deliveries are kept alive with ``+WPI`` (in progress) every third of ``ack_wait``; closing hands
every unsettled one back with ``-NAK``. Imports polybus core, nats-py and this package's modules.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
from typing import TYPE_CHECKING, Any

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import api

from polybus import NotFoundError, PolybusError
from polybus.adapter import Consumer, Delivery, Outcome, Start
from polybus_nats._errors import boundary, translate
from polybus_nats._wire import parse_ack_subject, user_headers

if TYPE_CHECKING:
    from polybus_nats._broker import NatsTopic

__all__ = ["NatsConsumer"]

log = logging.getLogger("polybus.nats")

REQUEST_GRACE = 1.0
"""Seconds past a pull request's expiry after which it is taken as lost (a dropped connection)."""
MAX_EXPIRES = 0.3
"""Longest a pull request waits on the server: a closing consumer waits for its end (see _release)."""
CHECK_TIMEOUT = 1.0
"""Longest a fetch waits for the server to say whether its consumer still exists."""
NO_WAIT_BELOW = 0.01
"""Fetches shorter than this ask with ``no_wait`` (answer at once) instead of waiting on the server."""
ACK, TERM, IN_PROGRESS, NAK = b"+ACK", b"+TERM", b"+WPI", b"-NAK"


class NatsConsumer(Consumer):
    """Pulls from a JetStream consumer: durable (named after the group) or ephemeral (no group).

    ``start="earliest"`` makes a *new* group (or a listener) start from the first message the
    stream holds (replay) instead of messages sent from now on; it has no effect on a group that
    exists.
    """

    topic: NatsTopic

    def __init__(self, topic: NatsTopic, group: str | None, prefetch: int, start: Start = "latest") -> None:
        super().__init__(topic, group, prefetch)
        self._start = start
        self._arrived: collections.deque[Msg] = collections.deque()
        self._event = asyncio.Event()
        self._sub: Subscription | None = None
        self._inbox = ""
        self._next_subject = ""
        self._consumer_name = ""
        self._ack_wait = topic.broker.settings.ack_wait
        self._request_id = 0
        self._request_left = 0
        self._request_ends = 0.0
        self._gone = False
        self._keepalive: asyncio.Task[None] | None = None

    # -- joining -------------------------------------------------------------------------------

    def _config(self) -> api.ConsumerConfig:
        s = self.topic.broker.settings
        return api.ConsumerConfig(
            ack_policy=api.AckPolicy.EXPLICIT,
            deliver_policy=api.DeliverPolicy.ALL if self._start == "earliest" else api.DeliverPolicy.NEW,
            ack_wait=s.ack_wait,
            max_deliver=-1,
            max_ack_pending=s.max_ack_pending,
        )

    async def _join(self) -> api.ConsumerInfo:
        broker = self.topic.broker
        jsm, stream = broker.js, self.topic.stream
        config = self._config()
        if self.group is None:
            config.name = broker.nc.new_inbox().rpartition(".")[2]
            config.inactive_threshold = broker.settings.listener_inactive_threshold
            info: api.ConsumerInfo = await jsm.add_consumer(stream, config)
            return info
        try:
            info = await jsm.consumer_info(stream, self.group)
            return info
        except nats.js.errors.NotFoundError:
            pass
        config.name = config.durable_name = self.group
        try:
            info = await jsm.add_consumer(stream, config)
        except nats.js.errors.APIError:
            info = await jsm.consumer_info(stream, self.group)
        return info  # created meanwhile by another member

    async def _open(self) -> None:
        broker = self.topic.broker
        nc = broker.nc
        with boundary(f"join group {self.group!r} of topic {self.topic.name!r}"):
            info = await self._join()
            self._consumer_name = info.name
            if info.config.ack_wait:
                self._ack_wait = info.config.ack_wait
            self._next_subject = f"{broker.api_prefix}.CONSUMER.MSG.NEXT.{self.topic.stream}.{info.name}"
            self._inbox = nc.new_inbox()
            # flow control is by pull batch (bounded by prefetch): no client-side limit that could drop
            self._sub = await nc.subscribe(
                f"{self._inbox}.*", cb=self._on_msg, pending_msgs_limit=0, pending_bytes_limit=0
            )
        self._keepalive = asyncio.create_task(self._keep_alive(), name=f"polybus-nats keepalive {self!r}")

    # -- receiving -----------------------------------------------------------------------------

    async def _on_msg(self, msg: Msg) -> None:
        if msg.reply:
            self._arrived.append(msg)
            self._request_left -= 1
        else:
            self._on_status(msg)
        self._event.set()

    def _on_status(self, msg: Msg) -> None:
        headers = msg.headers or {}
        status = headers.get("Status", "")
        if status == "100":
            return  # idle heartbeat
        if not msg.subject.endswith(f".{self._request_id}"):
            return  # the end of an earlier request, already taken as over
        description = headers.get("Description", "").lower()
        if (status == "409" and "deleted" in description) or status == "503":
            self._gone = True  # deleted, or a server still starting: _fetch asks which
        elif status not in ("404", "408", "409"):
            log.debug("unexpected JetStream status %s %r on %r", status, description, self)
        self._request_left = 0

    async def _fetch(self, max_messages: int, timeout: float) -> list[Delivery]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if self._gone:
                await self._check_exists()
            if self._arrived:
                return self._take(max_messages)
            now = loop.time()
            if self._request_left > 0 and now >= self._request_ends:
                # its end never came: the connection dropped, or the consumer is gone (a deleted
                # consumer's requests go unanswered); ask the server which, then pull again
                self._request_left = 0
                self._gone = True
                continue
            remaining = deadline - now
            if self._request_left <= 0 and not self.closed:
                await self._pull(max_messages, remaining)
            if remaining <= 0 or self.closed:
                return self._take(max_messages) if self._arrived else []
            self._event.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):  # not wait_for: on 3.11 it can swallow a cancel
                    await self._event.wait()

    async def _check_exists(self) -> None:
        """Raise NotFoundError if the server no longer has this consumer (or its stream)."""
        self._gone = False
        try:
            async with asyncio.timeout(CHECK_TIMEOUT):  # a fetch must keep (about) to its timeout
                await self.topic.broker.js.consumer_info(self.topic.stream, self._consumer_name)
        except nats.js.errors.NotFoundError as exc:
            what = f"group {self.group!r}" if self.group else "the listener"
            raise NotFoundError(
                f"{what} of topic {self.topic.name!r} no longer exists on the server (deleted, or the "
                "topic was)"
            ) from exc
        except (nats.errors.Error, OSError, TimeoutError) as exc:
            log.debug("consumer check failed: %s", translate(exc, "consumer check"))

    async def _pull(self, batch: int, wait: float) -> None:
        request: dict[str, Any] = {"batch": batch}
        wait = min(wait, MAX_EXPIRES)
        if wait >= NO_WAIT_BELOW:
            request["expires"] = int(wait * 1e9)
        else:
            request["no_wait"] = True
            wait = 0.0
        self._request_id += 1
        self._request_left = batch
        self._request_ends = asyncio.get_running_loop().time() + wait + REQUEST_GRACE
        with boundary(f"fetch from topic {self.topic.name!r}"):
            await self.topic.broker.nc.publish(
                self._next_subject, json.dumps(request).encode(), reply=f"{self._inbox}.{self._request_id}"
            )

    def _take(self, n: int) -> list[Delivery]:
        out: list[Delivery] = []
        while self._arrived and len(out) < n:
            msg = self._arrived.popleft()
            try:
                ack = parse_ack_subject(msg.reply)
            except ValueError:
                log.warning("ignoring a message that is not a JetStream delivery on %r", self)
                continue
            headers, key, msg_id = user_headers(msg.headers)
            out.append(
                Delivery(
                    self,
                    id=msg_id or f"{ack.stream}:{ack.stream_seq}",
                    topic=self.topic.name,
                    body=msg.data,
                    headers=headers,
                    key=key,
                    timestamp=ack.timestamp,
                    attempt=ack.delivered,
                    native=msg,
                )
            )
        return out

    def _interrupt(self) -> None:
        self._event.set()

    # -- settling ------------------------------------------------------------------------------

    async def _settle_native(self, delivery: Delivery, outcome: Outcome, delay: float | None) -> None:
        msg: Msg = delivery.native
        if outcome is Outcome.ACK:
            payload = ACK
        elif outcome is Outcome.REJECT:
            payload = TERM
        elif delay:
            payload = b'-NAK {"delay": %d}' % int(delay * 1e9)
        else:
            payload = NAK
        with boundary(f"{outcome.value} delivery {delivery.id!r}"):
            await self.topic.broker.nc.publish(msg.reply, payload)

    async def _await_request_end(self) -> None:
        loop = asyncio.get_running_loop()
        ends = self._request_ends - REQUEST_GRACE + 0.5
        while self._request_left > 0 and (remaining := ends - loop.time()) > 0:
            self._event.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):  # not wait_for: on 3.11 it can swallow a cancel
                    await self._event.wait()

    async def _keep_alive(self) -> None:
        """Tell the server every held delivery is still in progress, so long handlers keep it."""
        interval = max(self._ack_wait / 3, 0.1)
        nc = self.topic.broker.nc
        while True:
            await asyncio.sleep(interval)
            held = [d.native.reply for d in self.held()]
            held.extend(m.reply for m in self._arrived)
            try:
                for reply in held:
                    await nc.publish(reply, IN_PROGRESS)
            except (nats.errors.Error, OSError) as exc:
                log.debug("could not extend ack deadlines: %s", translate(exc, "in progress"))

    async def _release(self, deliveries: list[Delivery]) -> None:
        if self._keepalive is not None:
            self._keepalive.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keepalive
        broker = self.topic.broker
        try:
            nc = broker.nc
        except PolybusError:
            return  # the connection is gone: the server redelivers after ack_wait
        if self.group is not None:
            # A pull request still open on the server would take the messages handed back below
            # (even once nobody listens to its reply subject): wait for its end, at most its expiry.
            await self._await_request_end()
        if self._sub is not None:
            try:
                async with asyncio.timeout(broker.settings.publish_timeout):
                    await self._sub.drain()  # type: ignore[no-untyped-call]
            except (nats.errors.Error, OSError, TimeoutError) as exc:
                log.debug("drain failed: %s", translate(exc, "drain"))
                with contextlib.suppress(nats.errors.Error, OSError):
                    await self._sub.unsubscribe()
        held = [d.native.reply for d in deliveries]
        held.extend(m.reply for m in self._arrived)
        self._arrived.clear()
        try:
            if self.group is None:
                await broker.js.delete_consumer(self.topic.stream, self._consumer_name)
            else:
                for reply in held:
                    await nc.publish(reply, NAK)
                await nc.flush(timeout=int(broker.settings.publish_timeout) or 1)
        except (nats.errors.Error, OSError, TimeoutError) as exc:
            log.warning(
                "could not hand %d deliveries back at once (%s); the server redelivers them after ack_wait",
                len(held),
                translate(exc, "release"),
            )
