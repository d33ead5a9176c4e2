"""``SqsBroker`` and ``SqsTopic``: the ``sqs://`` adapter's connection and topics.

boto3 is synchronous, so every call runs on one of two bounded thread pools (long polls on their
own, so that waiting consumers never starve publishes and acks) and the event loop never blocks.
Transient failures (endpoint unreachable, throttling, 5xx) are retried with the settings'
``reconnect`` policy (backoff and jitter); what still fails raises a polybus error.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import uuid
from typing import Any, Literal

from polybus import ClosedError, MessageTooLargeError, PolybusError, PublishError
from polybus.adapter import (
    Broker,
    Capabilities,
    Message,
    OptionsModel,
    ReconnectPolicy,
    Start,
    Support,
    Topic,
    TopicStats,
)
from polybus_sqs import _topology, _wire
from polybus_sqs._errors import TransientBrokerError, translate
from polybus_sqs._settings import SqsSettings

__all__ = ["SqsBroker", "SqsTopic"]

log = logging.getLogger("polybus.sqs")
Service = Literal["sns", "sqs", "sts"]


class SqsBroker(Broker):
    """Amazon SQS with SNS fan-out: ``polybus.connect("sqs://?region=eu-west-1")``."""

    scheme = "sqs"
    settings: SqsSettings
    settings_class = SqsSettings

    def __init__(self, settings: SqsSettings | None = None) -> None:
        super().__init__(settings)
        s = self.settings
        fifo = Support.NATIVE if s.fifo else Support.UNSUPPORTED
        self.capabilities = Capabilities(
            competing_consumers=Support.NATIVE,
            fan_out=Support.NATIVE,
            ordering_per_key=fifo,
            key_affinity=fifo,  # FIFO: a message group is locked while one of its messages is in flight
            delayed_nack=Support.NATIVE,
            delivery_count=Support.NATIVE,
            dead_letter=Support.NATIVE if s.dead_letter_after is not None else Support.EMULATED,
            replay=Support.UNSUPPORTED,
            priority=Support.UNSUPPORTED,
            dedup=fifo,
            backlog_stats=Support.NATIVE,
            max_message_size=s.max_message_size,
            dedup_window=300.0 if s.fifo else None,
            group_send=Support.NATIVE,  # SendMessageBatch to the group's own queue
        )
        self._clients: dict[str, Any] = {}
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._receive_pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._account = ""
        self._partition = "aws"
        self._region = ""
        self._topic_arns: dict[str, str] = {}
        self._publishers: dict[str, Any] = {}
        self._queues: dict[tuple[str, str | None], _topology.Queue] = {}

    @property
    def reconnect(self) -> ReconnectPolicy:
        """The settings' policy for retrying transient failures."""
        return self.settings.reconnect

    @property
    def display_url(self) -> str:
        return self.settings.display_url()

    @property
    def sns(self) -> Any:
        """The boto3 SNS client (advanced use; it is synchronous: never call it on the event loop)."""
        return self._clients["sns"]

    @property
    def sqs(self) -> Any:
        """The boto3 SQS client (advanced use; it is synchronous: never call it on the event loop)."""
        return self._clients["sqs"]

    # -- life cycle ---------------------------------------------------------------------------

    async def _open(self) -> None:
        s = self.settings
        self._pool = concurrent.futures.ThreadPoolExecutor(s.max_threads, thread_name_prefix="polybus-sqs")
        self._receive_pool = concurrent.futures.ThreadPoolExecutor(
            s.receive_threads, thread_name_prefix="polybus-sqs-receive"
        )
        try:
            loop = asyncio.get_running_loop()
            self._clients = await loop.run_in_executor(self._pool, self._make_clients)
            identity = await self.call("sts", "get_caller_identity", retry=False)
        except BaseException:
            self._shutdown()
            raise
        arn = str(identity.get("Arn", "arn:aws:"))
        self._partition = arn.split(":")[1] or "aws"
        self._account = str(identity["Account"])
        self._region = str(self._clients["sqs"].meta.region_name)

    def _make_clients(self) -> dict[str, Any]:
        import boto3
        from botocore.config import Config

        s = self.settings
        try:
            session = boto3.session.Session(
                aws_access_key_id=s.access_key_id,
                aws_secret_access_key=s.secret,
                aws_session_token=s.session_token.get_secret_value() if s.session_token else None,
                region_name=s.region,
                profile_name=s.profile,
            )
            region = s.region or session.region_name or ("us-east-1" if s.endpoint_url else None)
            config = Config(
                region_name=region,
                max_pool_connections=s.max_threads + s.receive_threads,
                connect_timeout=s.connect_timeout,
                read_timeout=s.read_timeout,
                retries={"mode": "standard", "total_max_attempts": 1},
            )
            return {
                name: session.client(name, endpoint_url=s.endpoint_url, verify=s.verify, config=config)
                for name in ("sns", "sqs", "sts")
            }
        except Exception as exc:
            raise translate(exc, "creating the boto3 clients", secret=s.secret) from exc

    async def _aclose(self) -> None:
        # the base closed every producer and consumer first (flushing acks, handing back held messages)
        self._shutdown()

    def _shutdown(self) -> None:
        for pool in (self._pool, self._receive_pool):
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
        for client in self._clients.values():
            try:
                client.close()
            except Exception:  # closing is best effort; nothing is lost
                log.debug("closing a boto3 client failed", exc_info=True)

    # -- calling boto3 off the loop -----------------------------------------------------------

    async def call(
        self,
        service: Service,
        operation: str,
        /,
        *,
        retry: bool = True,
        receive: bool = False,
        error: type[PolybusError] = PolybusError,
        **params: Any,
    ) -> dict[str, Any]:
        """Run ``client.operation(**params)`` on a worker thread; translate errors; retry transient ones."""

        async def once() -> dict[str, Any]:
            try:
                return await self.submit(service, operation, receive=receive, **params)
            except Exception as exc:
                raise self.failure(exc, f"{service} {operation}", error) from exc

        if not retry:
            return await once()
        return await self.reconnect.run(once, retry_on=(TransientBrokerError,), what=f"{service} {operation}")

    def submit(
        self, service: Service, operation: str, /, *, receive: bool = False, **params: Any
    ) -> asyncio.Future[dict[str, Any]]:
        """Start ``client.operation(**params)`` on a worker thread: a future of the reply (or boto3's error).

        For callers that must see the reply even when they are cancelled meanwhile (see
        :meth:`failure` to translate its error); :meth:`call` is the usual way.
        """
        pool = self._receive_pool if receive else self._pool
        if pool is None:
            raise PolybusError(f"{self!r} is not open")
        method = getattr(self._clients[service], operation)
        return asyncio.get_running_loop().run_in_executor(pool, functools.partial(method, **params))

    def failure(self, exc: Exception, what: str, error: type[PolybusError] = PolybusError) -> PolybusError:
        """The polybus error for ``exc``, raised by a boto3 call doing ``what`` (the secret scrubbed)."""
        if isinstance(exc, RuntimeError) and self.closed:  # the pools are shut down
            return ClosedError(f"{self!r} is closed")
        return translate(exc, what, secret=self.settings.secret, default=error)

    def arn(self, service: str, name: str) -> str:
        """The ARN of resource ``name`` of ``service`` in this broker's account and region."""
        return f"arn:{self._partition}:{service}:{self._region}:{self._account}:{name}"

    # -- topics -------------------------------------------------------------------------------

    def _topic(self, name: str) -> SqsTopic:
        return SqsTopic(self, name)


class SqsTopic(Topic):
    """A polybus topic: an SNS topic; its groups are SQS queues subscribed to it."""

    broker: SqsBroker

    @property
    def arn(self) -> str:
        """The SNS topic's ARN (the broker must be open)."""
        return self.broker.arn("sns", _topology.sns_topic_name(self.broker, self.name))

    async def _ensure(self) -> None:
        if self.name in self.broker._topic_arns:
            return
        s = self.broker.settings
        attributes: dict[str, str] = {}
        if s.fifo:
            attributes["FifoTopic"] = "true"
        if s.max_message_size > 256 * 1024:
            attributes["MaximumMessageSize"] = str(s.max_message_size)
        reply = await self.broker.call(
            "sns",
            "create_topic",
            Name=_topology.sns_topic_name(self.broker, self.name),
            Attributes=attributes,
        )
        self.broker._topic_arns[self.name] = str(reply["TopicArn"])

    async def _delete(self) -> None:
        self.broker._topic_arns.pop(self.name, None)
        for key in [k for k in self.broker._queues if k[0] == self.name]:
            del self.broker._queues[key]
        await _topology.delete_topic(self.broker, self.name, self.arn)

    async def _stats(self) -> TopicStats:
        groups = await _topology.topic_stats(self.broker, self.name, self.arn)
        return TopicStats(topic=self.name, groups=groups)

    async def _send_to_group(self, group: str, messages: list[Message]) -> list[str]:
        # natively: SendMessageBatch to the group's queue, in the wire format SNS's raw delivery gives
        broker = self.broker
        url = await _topology.group_queue_url(broker, self.name, group)
        limit = broker.settings.max_message_size
        entries: list[tuple[dict[str, Any], int]] = []
        for message in messages:
            body, attributes, size = _wire.encode(message)
            if size > limit:
                raise MessageTooLargeError(size, limit, topic=self.name)
            entry: dict[str, Any] = {"MessageBody": body, "MessageAttributes": attributes}
            if broker.settings.fifo:  # a fresh deduplication id: a deliberate resend is not a duplicate
                entry["MessageGroupId"] = message.key or message.id
                entry["MessageDeduplicationId"] = uuid.uuid4().hex
            entries.append((entry, size))
        start = 0
        while start < len(entries):
            batch: list[dict[str, Any]] = []
            total = 0
            while (
                start < len(entries) and len(batch) < 10 and (not batch or total + entries[start][1] <= limit)
            ):
                total += entries[start][1]
                batch.append({"Id": str(len(batch)), **entries[start][0]})
                start += 1
            reply = await broker.call(
                "sqs", "send_message_batch", QueueUrl=url, Entries=batch, error=PublishError
            )
            failed = reply.get("Failed") or []
            if failed:
                first = failed[0]
                raise PublishError(
                    f"SQS refused {len(failed)} message(s) for group {group!r} of {self.name!r} "
                    f"({first.get('Code')}: {first.get('Message')})"
                )
        return [m.id for m in messages]

    def _producer(self, options: OptionsModel) -> Any:
        from polybus_sqs._producer import SqsProducer

        return SqsProducer(self)

    def _consumer(self, group: str | None, prefetch: int, start: Start, options: OptionsModel) -> Any:
        from polybus_sqs._consumer import SqsConsumer  # "earliest" never comes: replay is unsupported

        return SqsConsumer(self, group, prefetch)
