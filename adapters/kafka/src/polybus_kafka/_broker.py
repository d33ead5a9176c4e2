"""``KafkaBroker`` (``kafka://``) and ``KafkaTopic``: the connection to a cluster, and its topics.

The broker holds one ``KafkaAdmin`` (topics, groups, log positions; ``_admin.py``) and one aiokafka
producer shared by every ``KafkaProducer`` and by the consumers' retry copies; each consumer has
its own aiokafka consumer. On open it asks the cluster who it is and, on tansu only, sets up the
workarounds of ``_tansu.py``. Imports aiokafka, polybus, polybus.adapter and this package's modules.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import logging
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka import errors as kerrors

from polybus import (
    Broker,
    BrokerConnectionError,
    Capabilities,
    NotFoundError,
    PolybusError,
    Support,
    Topic,
)
from polybus.adapter import GroupStats, Message, Start, TopicStats
from polybus_kafka._admin import KafkaAdmin
from polybus_kafka._compat import forget_topics, track_topic
from polybus_kafka._consumer import KafkaConsumer
from polybus_kafka._errors import translated
from polybus_kafka._producer import KafkaProducer, publish
from polybus_kafka._settings import KafkaSettings
from polybus_kafka._tansu import Tansu, is_tansu
from polybus_kafka._wire import retry_topic

__all__ = ["KafkaBroker", "KafkaTopic"]

log = logging.getLogger("polybus.kafka")
_IDEMPOTENCE: dict[tuple[str, ...], bool] = {}  # bootstrap servers -> False once a broker refused it
_PROBING = contextvars.ContextVar("polybus_kafka_probing_idempotence", default=False)


class _RefusedIdempotence(logging.Filter):
    """aiokafka logs an error when a broker refuses an idempotent producer; polybus then sends
    without (logged once, at info), so the record is lowered to info while polybus tries it.
    ``_PROBING`` is set around that try; the producer's sender task inherits it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _PROBING.get() and record.levelno >= logging.ERROR and "InitProducerId" in str(record.msg):
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


_SENDER_LOG = logging.getLogger("aiokafka.producer.sender")


class KafkaBroker(Broker):
    """A connection to a Kafka cluster: ``polybus.connect("kafka://host:9092")``."""

    scheme = "kafka"
    settings: KafkaSettings
    settings_class = KafkaSettings

    def __init__(self, settings: KafkaSettings) -> None:
        super().__init__(settings)
        self.capabilities = Capabilities(
            competing_consumers=Support.NATIVE,
            fan_out=Support.NATIVE,
            ordering_per_key=Support.NATIVE,
            key_affinity=Support.NATIVE,  # a key's partition has one owner in the group at a time
            delayed_nack=Support.EMULATED,
            delivery_count=Support.EMULATED,
            dead_letter=Support.EMULATED,  # dead letters per group: polybus_patterns, from a topic
            replay=Support.NATIVE,
            priority=Support.UNSUPPORTED,
            dedup=Support.UNSUPPORTED,
            backlog_stats=Support.NATIVE,
            max_message_size=settings.max_message_size,
            group_send=Support.NATIVE,  # the group's own retry topic, read by that group only
        )
        self._admin: KafkaAdmin | None = None
        self._producer: AIOKafkaProducer | None = None
        self.tansu: Tansu | None = None
        """The tansu workarounds, set on open where the cluster is tansu (else None)."""
        self._known: dict[str, int] = {}  # topic -> partition count, of topics known to exist
        self._senders: collections.Counter[str] = collections.Counter()
        self._consumers: collections.defaultdict[str, set[KafkaConsumer]] = collections.defaultdict(set)
        """Open consumers per topic, told when this connection deletes their topic."""
        """Open producers (and group members, for their retry copies) per topic: the topics in use."""
        self.batch_locks: collections.defaultdict[tuple[str, int], asyncio.Lock] = collections.defaultdict(
            asyncio.Lock
        )
        """One per partition: record batches are handed to aiokafka one at a time, first come first
        served (its own wait for a free slot is unfair and can time out under many concurrent sends)."""

    @property
    def display_url(self) -> str:
        return self.settings.display_url

    @property
    def admin(self) -> KafkaAdmin:
        """Topics, groups and log positions of the cluster."""
        assert self._admin is not None
        return self._admin

    @property
    def producer(self) -> AIOKafkaProducer:
        """The shared aiokafka producer (``acks=all``)."""
        assert self._producer is not None
        return self._producer

    async def _open(self) -> None:
        where = f"connecting to {self.display_url}"
        try:
            with translated(where):
                self._admin = KafkaAdmin(self.settings, self.new_consumer)
                await self._admin.start()
                await self._identify()
                self._producer = await self._start_producer()
        except BaseException:
            await self._aclose()
            raise

    async def _identify(self) -> None:
        """Set up the tansu workarounds if the cluster is tansu (the ``tansu`` setting overrides)."""
        setting = self.settings.tansu
        cluster_id = None
        if setting is None:
            try:
                cluster_id = await self.admin.cluster_id()
            except PolybusError as exc:  # an old broker: not tansu, which answers
                log.info("%s: could not read the cluster id (%s)", self.display_url, exc)
        if is_tansu(cluster_id, setting):
            self.tansu = Tansu(self.settings, self.admin)
            self.admin.read_back = self.tansu.read_back

    async def _start_producer(self) -> AIOKafkaProducer:
        s = self.settings
        options = {
            **s.client_options(),
            "acks": "all",
            "max_batch_size": s.max_batch_size,
            "max_request_size": max(s.max_message_size + 64 * 1024, s.max_batch_size),
            "linger_ms": s.linger_ms,
            "compression_type": s.compression,
        }
        servers = tuple(s.bootstrap_servers)
        auto = s.idempotence is None and self.tansu is None and _IDEMPOTENCE.get(servers) is not False
        if s.idempotence or auto:
            producer = AIOKafkaProducer(**options, enable_idempotence=True)
            if _RefusedIdempotence not in {type(f) for f in _SENDER_LOG.filters}:
                _SENDER_LOG.addFilter(_RefusedIdempotence())
            token = _PROBING.set(not s.idempotence)
            try:
                await producer.start()
                return producer
            except (
                kerrors.UnknownError,
                kerrors.UnsupportedVersionError,
                kerrors.ClusterAuthorizationFailedError,
            ):
                await producer.stop()
                if s.idempotence:
                    raise
                _IDEMPOTENCE[servers] = False
                log.info("%s does not support idempotent producers; sending without", self.display_url)
            finally:
                _PROBING.reset(token)
        producer = AIOKafkaProducer(**options)
        try:
            await producer.start()
        except BaseException:
            await producer.stop()
            raise
        return producer

    async def _aclose(self) -> None:
        producer, admin = self._producer, self._admin
        self._producer = self._admin = None
        self.tansu = None
        with contextlib.suppress(Exception):
            if producer is not None:
                await producer.stop()
        if admin is not None:
            await admin.close()

    def _topic(self, name: str) -> KafkaTopic:
        return KafkaTopic(self, name)

    def new_consumer(self, **options: Any) -> AIOKafkaConsumer:
        """An aiokafka consumer with this broker's connection and fetch settings."""
        s = self.settings
        return AIOKafkaConsumer(
            **s.client_options(),
            enable_auto_commit=False,
            fetch_max_wait_ms=s.fetch_max_wait_ms,
            max_partition_fetch_bytes=s.max_partition_fetch_bytes,
            fetch_max_bytes=s.fetch_max_bytes,
            **options,
        )

    # -- topics -------------------------------------------------------------------------------

    async def topic_names(self) -> list[str]:
        """Names of the cluster's topics."""
        return await self.admin.topic_names()

    async def create_topic(self, name: str, partitions: int) -> None:
        """Create ``name`` if missing, then wait until its partitions show in metadata."""
        if name in self._known:
            return
        await self.admin.create_topic(name, partitions)
        with translated(f"reading metadata of {name!r}"):
            count = len(await self.producer.partitions_for(name))
        self._known[name] = count
        self._track_if_in_use(name)

    async def partitions(self, name: str) -> list[TopicPartition]:
        """The partitions of an existing topic."""
        with translated(f"reading metadata of {name!r}"):
            numbers = await self.producer.partitions_for(name)
        self._track_if_in_use(name)
        return [TopicPartition(name, p) for p in sorted(numbers)]

    async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        """The offset after the last record of each partition, as a consumer will really read it."""
        return await self.admin.end_offsets(tps)

    # A broker with auto-creation (tansu always, Kafka by default) creates a topic that a metadata
    # request names, and aiokafka's producer names every topic it ever sent to in each refresh: a
    # topic deleted here or elsewhere would come back. So the producer keeps metadata only of the
    # topics in use (an open producer, a group member's retry topic), and never of a deleted one.

    def use(self, name: str) -> None:
        """Someone sends to ``name`` from now on (until :meth:`release`): keep its metadata.

        Call it before ``create_topic(name)``, which then tracks it: a metadata request for a topic
        not created yet would create it with the broker's defaults.
        """
        self._senders[name] += 1
        if name in self._known:  # create_topic returns at once: track it here
            self._track_if_in_use(name)

    def release(self, name: str) -> None:
        """The end of one :meth:`use`; once nobody sends to ``name``, its metadata is let go."""
        self._senders[name] -= 1
        if self._senders[name] <= 0:
            del self._senders[name]
            self._let_metadata_go([name])

    def watch(self, consumer: KafkaConsumer) -> None:
        """Tell ``consumer`` when its topic is deleted through this connection (until :meth:`unwatch`)."""
        self._consumers[consumer.topic.name].add(consumer)

    def unwatch(self, consumer: KafkaConsumer) -> None:
        watching = self._consumers.get(consumer.topic.name)
        if watching is not None:
            watching.discard(consumer)
            if not watching:
                del self._consumers[consumer.topic.name]

    def forget(self, names: list[str]) -> None:
        """Deleted topics: forget what is known of them, and let their metadata go.

        Unless a producer of this connection is still open on one: its next send re-creates it.
        """
        for name in names:
            self._known.pop(name, None)
            for consumer in self._consumers.pop(name, set()):
                consumer.topic_deleted()
        for key in [k for k in self.batch_locks if k[0] in names]:
            del self.batch_locks[key]
        self._let_metadata_go([name for name in names if name not in self._senders])

    def _track_if_in_use(self, name: str) -> None:
        if name not in self._senders:
            self._let_metadata_go([name])
        elif self._producer is not None and not track_topic(self._producer, name):
            log.info("this aiokafka's producer may lose the metadata of %s", name)

    def _let_metadata_go(self, names: list[str]) -> None:
        if self._producer is not None and not forget_topics(self._producer, names):
            log.info("this aiokafka's producer keeps asking for metadata of %s", names)


class KafkaTopic(Topic):
    """A Kafka topic; its groups are consumer groups ``<topic>.<group>``."""

    broker: KafkaBroker

    async def _ensure(self) -> None:
        await self.broker.create_topic(self.name, self.broker.settings.partitions)

    async def _exists(self) -> None:
        if self.name not in await self.broker.topic_names():
            raise NotFoundError(f"topic {self.name!r} does not exist on {self.broker.display_url}")

    async def _delete(self) -> None:
        await self._exists()
        broker, admin = self.broker, self.broker.admin
        groups = await admin.groups_of(self.name)
        doomed = [self.name, *(retry_topic(self.name, g) for g in groups)]
        existing = set(await admin.topic_names())
        await admin.delete_topics([t for t in doomed if t in existing])
        broker.forget(doomed)
        await admin.delete_groups(list(groups.values()))

    async def _stats(self) -> TopicStats:
        admin = self.broker.admin
        existing = await admin.partitions_of()
        if self.name not in existing:
            raise NotFoundError(f"topic {self.name!r} does not exist on {self.broker.display_url}")
        main = existing[self.name]
        groups = await admin.groups_of(self.name)
        retry = {g: retry_topic(self.name, g) for g in groups if retry_topic(self.name, g) in existing}
        all_tps = list(main)
        for name in retry.values():
            all_tps += existing[name]
        ends = await admin.end_offsets(all_tps)
        starts = await admin.start_offsets(all_tps)
        out = {}
        for group, gid in groups.items():
            tps = [tp for tp in all_tps if tp.topic in (self.name, retry.get(group))]
            committed = await admin.committed(gid, tps)
            backlog = 0
            for tp in tps:
                default = ends[tp] if tp.topic == self.name else starts.get(tp, 0)
                backlog += max(0, ends[tp] - max(committed.get(tp, default), starts.get(tp, 0)))
            out[group] = GroupStats(backlog=backlog, in_flight=None)
        messages = sum(max(0, ends[tp] - starts.get(tp, 0)) for tp in main)
        return TopicStats(topic=self.name, groups=out, messages=messages)

    async def _send_to_group(self, group: str, messages: list[Message]) -> list[str]:
        # natively: the group's retry topic, which that group alone reads; no due time (due now) and
        # no attempt header (attempt 1), so the broker counts the re-sent message's attempts afresh
        broker, s = self.broker, self.broker.settings
        retry = retry_topic(self.name, group)
        broker.use(retry)
        try:
            await broker.create_topic(retry, s.retry_partitions or s.partitions)
            await s.reconnect.run(
                lambda: publish(broker, retry, messages),
                retry_on=(BrokerConnectionError,),
                what=f"sending to group {group!r} of {self.name!r}",
            )
        finally:
            broker.release(retry)
        return [m.id for m in messages]

    def _producer(self, options: Any) -> KafkaProducer:
        return KafkaProducer(self)

    def _consumer(self, group: str | None, prefetch: int, start: Start, options: Any) -> KafkaConsumer:
        """``start="earliest"`` makes a new group (or a listener) read the log from its start."""
        return KafkaConsumer(self, group, prefetch, start)
