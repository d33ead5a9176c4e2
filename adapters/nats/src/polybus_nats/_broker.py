"""``NatsBroker`` (one nats-py connection with JetStream) and ``NatsTopic`` (one JetStream stream).

Topic ``orders`` is stream ``{stream_prefix}orders`` holding subject ``{subject_prefix}orders``;
a group is a durable pull consumer on it. The connection is re-established by nats-py with the
delays of the settings' :class:`~polybus.ReconnectPolicy` (its backoff and jitter); subscriptions
survive.
Imports polybus core, nats-py and this package's modules.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any, TypeVar

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.aio.client import Server
from nats.js import JetStreamContext, api

from polybus import BrokerConnectionError, ClosedError, ConfigurationError
from polybus.adapter import (
    Broker,
    Capabilities,
    GroupStats,
    Message,
    OptionsModel,
    Start,
    Support,
    Topic,
    TopicStats,
    describe_error,
)
from polybus_nats._compat import RECONNECT_FOREVER, enable_reconnect
from polybus_nats._consumer import NatsConsumer
from polybus_nats._errors import boundary, translate
from polybus_nats._inbox import NatsInbox, send_reply
from polybus_nats._producer import NatsProducer
from polybus_nats._publisher import Publisher
from polybus_nats._settings import NatsSettings
from polybus_nats._wire import HEADROOM

__all__ = ["NatsBroker", "NatsTopic"]

log = logging.getLogger("polybus.nats")
T = TypeVar("T")

STREAM_NAME_IN_USE = 10058
SUBJECTS_OVERLAP = 10065


def nats_capabilities(max_payload: int, settings: NatsSettings) -> Capabilities:
    """What JetStream offers through this adapter, on a server with ``max_payload``."""
    return Capabilities(
        competing_consumers=Support.NATIVE,
        fan_out=Support.NATIVE,
        ordering_per_key=Support.NATIVE,
        delayed_nack=Support.NATIVE,
        delivery_count=Support.NATIVE,
        dead_letter=Support.EMULATED,  # dead letters per group: polybus_patterns, from a topic
        replay=Support.NATIVE if settings.retention == "limits" else Support.UNSUPPORTED,
        priority=Support.UNSUPPORTED,
        dedup=Support.NATIVE,
        backlog_stats=Support.NATIVE,
        max_message_size=min(settings.max_message_size, max_payload - HEADROOM),
        dedup_window=settings.duplicate_window,
        request_reply=Support.NATIVE,
    )


class NatsBroker(Broker):
    """A connection to a NATS server with JetStream. ``polybus.connect("nats://host:4222")``."""

    scheme = "nats"
    settings: NatsSettings
    settings_class = NatsSettings

    def __init__(self, settings: NatsSettings | None = None) -> None:
        super().__init__(settings)
        self.capabilities = nats_capabilities(1024 * 1024, self.settings)
        self._nc: NATS | None = None
        self._js: JetStreamContext | None = None
        self._reconnect_delays: Iterator[float] = iter(())
        self._publisher: Publisher | None = None
        self.slow_consumer_drops = 0
        """Messages nats-py dropped because a subscription's pending limit was hit (expected: 0)."""

    @property
    def display_url(self) -> str:
        s = self.settings
        auth = f"{s.user}:***@" if s.user else ("***@" if s.token else "")
        first = s.servers[0]
        scheme, _, rest = first.partition("://")
        return f"{scheme}://{auth}{rest}"

    def _live(self, part: T | None) -> T:
        """``part`` of the connection; raise if the broker is closed or not connected."""
        if self.closed:
            raise ClosedError(f"{self!r} is closed; create a new one")
        if part is None:
            raise BrokerConnectionError(f"{self.display_url} is not connected")
        return part

    @property
    def nc(self) -> NATS:
        """The nats-py connection (open brokers only)."""
        return self._live(self._nc)

    @property
    def js(self) -> JetStreamContext:
        """The JetStream context of the connection (open brokers only)."""
        return self._live(self._js)

    @property
    def api_prefix(self) -> str:
        """The subject prefix of the JetStream API (``$JS.API``): pull requests are sent under it."""
        return api.DEFAULT_PREFIX

    @property
    def publisher(self) -> Publisher:
        """The pipelined publisher of the connection (open brokers only)."""
        return self._live(self._publisher)

    # -- connection ---------------------------------------------------------------------------

    def _connect_options(self) -> dict[str, Any]:
        s = self.settings
        options: dict[str, Any] = {
            "servers": s.servers,
            "name": s.name,
            "connect_timeout": s.connect_timeout,
            "ping_interval": s.ping_interval,
            "max_outstanding_pings": s.max_outstanding_pings,
            # the first connect tries each server twice; reconnecting later never gives up
            "allow_reconnect": False,
            "max_reconnect_attempts": 1,
            "reconnect_time_wait": 0.2,
            "reconnect_to_server_handler": self._next_server,
            "error_cb": self._on_error,
            "disconnected_cb": self._on_disconnected,
            "reconnected_cb": self._on_reconnected,
        }
        if s.user is not None:
            options["user"] = s.user
        if s.password is not None:
            options["password"] = s.password.get_secret_value()
        if s.token is not None:
            options["token"] = s.token.get_secret_value()
        if s.creds_file:
            options["user_credentials"] = s.creds_file
        if s.nkeys_seed_file:
            options["nkeys_seed"] = s.nkeys_seed_file
        context = s.ssl_context()
        if context is not None:
            options["tls"] = context
            if s.tls_hostname:
                options["tls_hostname"] = s.tls_hostname
            options["tls_handshake_first"] = s.tls_handshake_first
        return options

    async def _open(self) -> None:
        nc = await self._connect()
        if not enable_reconnect(nc):
            # this nats-py cannot turn reconnecting on afterwards: connect again with it on from the
            # start (the first connect showed that the server is there and the credentials are good)
            log.debug("nats-py has no reconnect switch; reconnecting with reconnect on")
            with _quiet():
                await nc.close()
            nc = await self._connect(RECONNECT_FOREVER)
        self._nc = nc
        self._publisher = Publisher(nc)
        self._js = nc.jetstream(
            prefix=self.api_prefix,
            timeout=self.settings.publish_timeout,
            publish_async_max_pending=self.settings.max_pending_publishes,
        )
        self.capabilities = nats_capabilities(nc.max_payload, self.settings)

    async def _connect(self, overrides: dict[str, Any] | None = None) -> NATS:
        nc = NATS()
        try:
            async with asyncio.timeout(self.settings.connect_timeout * 3 + 1):
                await nc.connect(**{**self._connect_options(), **(overrides or {})})
        except (nats.errors.Error, OSError, TimeoutError, ValueError) as exc:
            text = describe_error(exc, "")
            for secret in (self.settings.password, self.settings.token):
                if secret is not None:
                    text = text.replace(secret.get_secret_value(), "***")
            with _quiet():
                async with asyncio.timeout(2):  # nats-py can hang closing a half-open TLS link
                    await nc.close()
            # no ``from exc``: a client exception might quote what it was given
            raise BrokerConnectionError(
                f"cannot connect to {self.display_url}: {type(exc).__name__}: {text}"
            ) from None
        return nc

    async def _aclose(self) -> None:
        nc, self._nc, self._js = self._nc, None, None
        publisher, self._publisher = self._publisher, None
        if publisher is not None:
            with _quiet():
                await publisher.aclose()
        if nc is not None:
            with _quiet():
                if nc.is_connected:
                    await nc.flush(timeout=2)  # settles (acks, naks) sent just before closing
            with _quiet():
                await nc.close()

    def _next_server(self, servers: list[Server], info: dict[str, Any]) -> tuple[Server | None, float]:
        """nats-py's reconnect hook: any server (nats-py picks), after the policy's next delay."""
        delay = next(self._reconnect_delays, None)
        if delay is None:  # past the policy's max_attempts: a connection never gives up, it keeps trying
            delay = self.settings.reconnect.maximum
        return None, delay

    async def _on_error(self, exc: Exception) -> None:
        if isinstance(exc, nats.errors.SlowConsumerError):
            self.slow_consumer_drops += 1
            log.warning(
                "nats-py dropped a message on %s (slow consumer); JetStream redelivers it after ack_wait",
                exc.subject,
            )
            return
        log.debug("nats: %s: %s", type(exc).__name__, exc)

    async def _on_disconnected(self) -> None:
        self._reconnect_delays = self.settings.reconnect.delays()  # nats-py calls this before reconnecting
        if not self.closed:
            log.warning("lost the connection to %s; reconnecting", self.display_url)

    async def _on_reconnected(self) -> None:
        log.warning("reconnected to %s", self.display_url)

    # -- topics -------------------------------------------------------------------------------

    def _topic(self, name: str) -> NatsTopic:
        return NatsTopic(self, name)

    # -- replies (core NATS inbox subjects: see _inbox) ------------------------------------------

    def _inbox(self) -> NatsInbox:
        return NatsInbox(self)

    async def _reply(self, address: str, message: Message) -> None:
        await self.open()
        await send_reply(self, address, message)


class NatsTopic(Topic):
    """A topic as a JetStream stream with one subject."""

    broker: NatsBroker

    @property
    def stream(self) -> str:
        """The JetStream stream name."""
        return self.broker.settings.stream_prefix + self.name

    @property
    def subject(self) -> str:
        """The subject messages are published on."""
        return self.broker.settings.subject_prefix + self.name

    def _stream_config(self) -> api.StreamConfig:
        s = self.broker.settings
        return api.StreamConfig(
            name=self.stream,
            subjects=[self.subject],
            storage=api.StorageType.FILE if s.storage == "file" else api.StorageType.MEMORY,
            retention=api.RetentionPolicy.LIMITS if s.retention == "limits" else api.RetentionPolicy.INTEREST,
            num_replicas=s.replicas,
            max_age=s.max_age,
            max_bytes=s.max_bytes,
            max_msgs=s.max_msgs,
            duplicate_window=s.duplicate_window,
        )

    async def _ensure(self) -> None:
        jsm = self.broker.js
        with boundary(f"ensure topic {self.name!r}"):
            try:
                await jsm.stream_info(self.stream)
                return
            except nats.js.errors.NotFoundError:
                pass
            try:
                await jsm.add_stream(self._stream_config())
            except nats.js.errors.APIError as exc:
                if exc.err_code == STREAM_NAME_IN_USE:
                    return  # created meanwhile by someone else
                if exc.err_code == SUBJECTS_OVERLAP:
                    raise ConfigurationError(
                        f"cannot create stream {self.stream!r}: subject {self.subject!r} is already held by "
                        "another stream (set subject_prefix to keep polybus subjects apart)"
                    ) from exc
                raise

    async def _delete(self) -> None:
        with boundary(f"delete topic {self.name!r}"):
            await self.broker.js.delete_stream(self.stream)

    async def _stats(self) -> TopicStats:
        jsm = self.broker.js
        with boundary(f"stats of topic {self.name!r}"):
            info = await jsm.stream_info(self.stream)
            consumers = await jsm.consumers_info(self.stream)
        groups = {
            c.config.durable_name: GroupStats(backlog=c.num_pending, in_flight=c.num_ack_pending)
            for c in consumers
            if c.config.durable_name
        }
        return TopicStats(topic=self.name, groups=groups, messages=info.state.messages)

    def _producer(self, options: OptionsModel) -> NatsProducer:
        return NatsProducer(self)

    def _consumer(
        self, group: str | None, prefetch: int, start: Start, options: OptionsModel
    ) -> NatsConsumer:
        return NatsConsumer(self, group, prefetch, start)


class _quiet:
    """Suppress (and log at debug level) any error of a best-effort clean-up step."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any) -> bool:
        if exc is not None and isinstance(exc, Exception):
            log.debug("ignored during clean-up: %s", translate(exc, "clean-up"))
            return True
        return False
