"""``KafkaBroker`` (``kafka://``) and ``KafkaTopic``: connection, topic admin, stats.

The broker holds one admin client and one producer shared by every ``KafkaProducer`` and by the
consumers' retry copies; each consumer has its own aiokafka consumer. Imports aiokafka, polybus
core modules and this package's modules.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka import errors as kerrors
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.protocol.admin import DeleteGroupsRequest
from aiokafka.protocol.group import JoinGroupRequest, LeaveGroupRequest

from polybus import (
    Broker,
    Capabilities,
    NotFoundError,
    Support,
    Topic,
)
from polybus._topic import GroupStats, TopicStats
from polybus_kafka._assignor import BusyAwareAssignor
from polybus_kafka._consumer import KafkaConsumer
from polybus_kafka._errors import translated
from polybus_kafka._producer import KafkaProducer
from polybus_kafka._settings import KafkaSettings
from polybus_kafka._wire import retry_topic, split_group_id

__all__ = ["KafkaBroker", "KafkaTopic"]

log = logging.getLogger("polybus.kafka")
_GROUP_ID_NOT_FOUND = 69  # Kafka error code; aiokafka has no class for it
_IDEMPOTENCE: dict[tuple[str, ...], bool] = {}  # bootstrap servers -> False once a broker refused it


class KafkaBroker(Broker):
    """A connection to a Kafka cluster: ``polybus.connect("kafka://host:9092")``."""

    scheme = "kafka"

    def __init__(self, settings: KafkaSettings) -> None:
        super().__init__()
        self.settings = settings
        self.default_prefetch = settings.prefetch
        self.capabilities = Capabilities(
            competing_consumers=Support.NATIVE,
            fan_out=Support.NATIVE,
            ordering_per_key=Support.NATIVE,
            delayed_nack=Support.EMULATED,
            delivery_count=Support.EMULATED,
            dead_letter=Support.UNSUPPORTED,
            replay=Support.NATIVE,
            priority=Support.UNSUPPORTED,
            dedup=Support.UNSUPPORTED,
            backlog_stats=Support.NATIVE,
            max_message_size=settings.max_message_size,
        )
        self._admin: AIOKafkaAdminClient | None = None
        self._producer: AIOKafkaProducer | None = None
        self._known: dict[str, int] = {}  # topic -> partition count, of topics known to exist
        self.batch_locks: collections.defaultdict[tuple[str, int], asyncio.Lock] = collections.defaultdict(
            asyncio.Lock
        )
        """One per partition: record batches are handed to aiokafka one at a time, first come first
        served (its own wait for a free slot is unfair and can time out under many concurrent sends)."""

    @classmethod
    def from_url(cls, url: str, **options: Any) -> KafkaBroker:
        """Build from ``kafka://[user:password@]host:port?option=value``; keywords override the URL."""
        return cls(KafkaSettings.from_url(url, **options))

    @property
    def display_url(self) -> str:
        return self.settings.display_url

    @property
    def admin(self) -> AIOKafkaAdminClient:
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
                self._admin = AIOKafkaAdminClient(**self.settings.client_options())
                await self._admin.start()
                self._producer = await self._start_producer()
        except BaseException:
            await self._aclose()
            raise

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
        if s.idempotence is not False and _IDEMPOTENCE.get(tuple(s.bootstrap_servers)) is not False:
            producer = AIOKafkaProducer(**options, enable_idempotence=True)
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
                _IDEMPOTENCE[tuple(s.bootstrap_servers)] = False
                log.info("%s does not support idempotent producers; sending without", self.display_url)
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
        with contextlib.suppress(Exception):
            if producer is not None:
                await producer.stop()
        with contextlib.suppress(Exception):
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
        with translated(f"listing topics on {self.display_url}"):
            names: list[str] = await self.admin.list_topics()
        return names

    async def create_topic(self, name: str, partitions: int) -> None:
        """Create ``name`` if missing, then wait until its partitions show in metadata."""
        if name in self._known:
            return
        with translated(f"creating topic {name!r}"):
            response = await self.admin.create_topics(
                [NewTopic(name, partitions, self.settings.replication_factor)]
            )
            for _topic, code, *rest in response.topic_errors:
                error = kerrors.for_code(code)
                if error not in (kerrors.NoError, kerrors.TopicAlreadyExistsError):
                    raise error(rest[0] if rest else "")
            count = len(await self.producer.partitions_for(name))
        self._known[name] = count

    async def partitions(self, name: str) -> list[TopicPartition]:
        """The partitions of an existing topic."""
        with translated(f"reading metadata of {name!r}"):
            numbers = await self.producer.partitions_for(name)
        return [TopicPartition(name, p) for p in sorted(numbers)]

    async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        """The offset after the last record of each partition, as a consumer will really read it.

        A broker answers ``ListOffsets(latest)`` with that offset; tansu answers with the base offset
        of the last record batch plus one, which is too low when that batch holds several records.
        So the last batch is read back from that offset and the highest offset in it wins; on Apache
        Kafka that read returns nothing new and the answer stands.
        """
        if not tps:
            return {}
        probe = self.new_consumer()
        try:
            with translated("reading end offsets"):
                await probe.start()
                ends: dict[TopicPartition, int] = dict(await probe.end_offsets(tps))
                starts = await probe.beginning_offsets(tps)
                todo = {tp for tp, end in ends.items() if end > starts.get(tp, 0)}
                if not todo:
                    return ends
                probe.assign(list(todo))
                for tp in todo:
                    probe.seek(tp, ends[tp] - 1)
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 5.0
                while todo and loop.time() < deadline:
                    got = await probe.getmany(*todo, timeout_ms=200)
                    for tp, records in got.items():
                        if records:
                            ends[tp] = max(ends[tp], records[-1].offset + 1)
                            todo.discard(tp)
                return ends
        finally:
            with contextlib.suppress(Exception):
                await probe.stop()

    async def delete_groups(self, gids: list[str]) -> None:
        """Delete consumer groups (their committed offsets), so a re-created topic starts clean."""
        if not gids:
            return
        with translated("deleting consumer groups"):
            for gid in gids:
                node = await self.admin.find_coordinator(gid)
                response = await self.admin._client.send(node, DeleteGroupsRequest([gid]))
                for name, code in response.results:
                    if code not in (0, _GROUP_ID_NOT_FOUND):
                        log.warning("could not delete group %s: %s", name, kerrors.for_code(code).__name__)

    async def leave_group(self, gid: str, member_id: str) -> None:
        """Tell the coordinator that ``member_id`` left ``gid`` (best effort, errors are logged)."""
        try:
            async with asyncio.timeout(5):
                node = await self.admin.find_coordinator(gid)
                await self.admin._client.send(node, LeaveGroupRequest(gid, member_id))
        except (kerrors.KafkaError, OSError, TimeoutError) as exc:
            log.info("leaving group %s failed: %s", gid, exc)

    async def join_group_as(self, gid: str, member_id: str, metadata: bytes) -> str | None:
        """Send a JoinGroup for ``member_id`` of ``gid``; the leader it names, or None (errors are logged).

        Used to un-wedge a rebalance stuck behind a departed leader on tansu (see ``KafkaConsumer``).
        """
        s = self.settings
        request = JoinGroupRequest(
            gid,
            s.session_timeout_ms,
            s.rebalance_timeout_ms,
            member_id,
            None,
            "consumer",
            [(BusyAwareAssignor.name, metadata)],
        )
        try:
            async with asyncio.timeout(s.session_timeout_ms / 1000 + s.rebalance_timeout_ms / 1000 + 5):
                node = await self.admin.find_coordinator(gid)
                response = await self.admin._client.send(node, request)
        except (kerrors.KafkaError, OSError, TimeoutError) as exc:
            log.info("joining group %s as %s failed: %s", gid, member_id, exc)
            return None
        if response.error_code != 0:
            error = kerrors.for_code(response.error_code).__name__
            log.info("joining group %s as %s: %s", gid, member_id, error)
            return None
        return str(response.leader_id)

    async def group_members(self, gid: str) -> set[str] | None:
        """Member ids of ``gid`` as its coordinator lists them, or None (errors are logged)."""
        try:
            async with asyncio.timeout(10):
                responses = await self.admin.describe_consumer_groups([gid])
            members: set[str] = set()
            for response in responses:
                for group in response.groups:  # (error, id, state, protocol type, protocol, members, ...)
                    if group[0] != 0:
                        return None
                    members.update(str(member[0]) for member in group[5])
        except (kerrors.KafkaError, OSError, TimeoutError, IndexError, TypeError) as exc:
            log.info("describing group %s failed: %r", gid, exc)
            return None
        return members

    async def groups_of(self, topic: str) -> dict[str, str]:
        """``{polybus group: Kafka group id}`` of the groups on ``topic``."""
        with translated("listing consumer groups"):
            listed = await self.admin.list_consumer_groups()
        out = {}
        for gid, *_ in listed:
            group = split_group_id(topic, gid)
            if group is not None:
                out[group] = gid
        return out

    async def committed(self, gid: str, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        """Committed offsets of ``gid`` (partitions without a commit are left out)."""
        with translated(f"reading offsets of group {gid!r}"):
            offsets = await self.admin.list_consumer_group_offsets(gid, partitions=tps)
        return {tp: meta.offset for tp, meta in offsets.items() if meta is not None and meta.offset >= 0}


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
        broker = self.broker
        groups = await broker.groups_of(self.name)
        doomed = [self.name, *(retry_topic(self.name, g) for g in groups)]
        existing = set(await broker.topic_names())
        with translated(f"deleting topic {self.name!r}"):
            await broker.admin.delete_topics([t for t in doomed if t in existing])
        for name in doomed:
            broker._known.pop(name, None)
        await broker.delete_groups(list(groups.values()))

    async def _stats(self) -> TopicStats:
        await self._exists()
        broker = self.broker
        main = await broker.partitions(self.name)
        groups = await broker.groups_of(self.name)
        existing = set(await broker.topic_names())
        retry = {g: retry_topic(self.name, g) for g in groups if retry_topic(self.name, g) in existing}
        all_tps = list(main)
        for name in retry.values():
            all_tps += await broker.partitions(name)
        ends = await broker.end_offsets(all_tps)
        with translated("reading start offsets"):
            probe = broker.new_consumer()
            try:
                await probe.start()
                starts = await probe.beginning_offsets(all_tps)
            finally:
                await probe.stop()
        out = {}
        for group, gid in groups.items():
            tps = [tp for tp in all_tps if tp.topic in (self.name, retry.get(group))]
            committed = await broker.committed(gid, tps)
            backlog = 0
            for tp in tps:
                default = ends[tp] if tp.topic == self.name else starts.get(tp, 0)
                backlog += max(0, ends[tp] - max(committed.get(tp, default), starts.get(tp, 0)))
            out[group] = GroupStats(backlog=backlog, in_flight=None)
        messages = sum(max(0, ends[tp] - starts.get(tp, 0)) for tp in main)
        return TopicStats(topic=self.name, groups=out, messages=messages)

    def _producer(self, options: Any) -> KafkaProducer:
        return KafkaProducer(self)

    def _consumer(self, group: str | None, prefetch: int, start: str, options: Any) -> KafkaConsumer:
        """``start="earliest"`` makes a new group (or a listener) read the log from its start."""
        return KafkaConsumer(self, group, prefetch, start=start)
