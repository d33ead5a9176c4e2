"""``KafkaConsumer``: a member of a consumer group (or a listener without one) on one topic.

A group member subscribes to the topic and to its group's retry topic, with the busy-aware
assignor; this module joins, follows rebalances, turns records into deliveries, and leaves. Acks
mark offsets settled in a ``PartitionTracker``; a ``Committer`` (``_commits.py``) commits the
contiguous settled prefix of each partition every ``commit_interval``. ``nack(delay)`` stores a
copy on the retry topic and then settles the original (``_retry.py``: the retry topic and the
copies held until due). A listener without a group reads every partition from its end and keeps
nacks in memory. On tansu, a ``JoinWatchdog`` watches the member's joins (``_tansu.py``).
Imports aiokafka, polybus, polybus.adapter and this package's modules.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka import errors as kerrors

from polybus import NotFoundError, OperationTimeout, PolybusError
from polybus.adapter import BYTES, CONTENT_TYPE, Consumer, Delivery, Outcome, Start
from polybus_kafka._assignor import BusyAwareAssignor
from polybus_kafka._commits import Committer
from polybus_kafka._errors import translated
from polybus_kafka._offsets import PartitionTracker
from polybus_kafka._retry import RetryQueue
from polybus_kafka._tansu import JoinWatchdog
from polybus_kafka._wire import ID_HEADER, due_time, group_id, read_headers, retry_topic

if TYPE_CHECKING:
    from polybus_kafka._broker import KafkaTopic

__all__ = ["KafkaConsumer"]

log = logging.getLogger("polybus.kafka")
_CHUNK = 100
"""Most deliveries one fetch makes from the records aiokafka has read ahead."""


class KafkaConsumer(Consumer):
    """Receives from a Kafka topic as a member of consumer group ``<topic>.<group>``."""

    topic: KafkaTopic
    ack_batch_size = 32
    """An ack is bookkeeping here (no request): marking offsets every 32 acks costs nothing, and
    frees the deliveries at once; 1,024 queued deliveries kept the garbage collector busy (measured:
    263 young and 24 middle collections per 100,000 messages, ~15% of consume throughput; none at 32)."""

    def __init__(self, topic: KafkaTopic, group: str | None, prefetch: int, start: Start = "latest") -> None:
        super().__init__(topic, group, prefetch)
        self._start = start
        self._client: AIOKafkaConsumer | None = None
        self._trackers: dict[TopicPartition, PartitionTracker] = {}
        self._retry = retry_topic(topic.name, group) if group else None
        self._retries = RetryQueue(topic.broker, self._retry)
        self._assigned = asyncio.Event()
        self._wakeup = asyncio.Event()
        interval = topic.broker.settings.commit_interval
        self._commits = Committer(self._trackers, lambda: self._client, interval) if group else None
        """A group member's commits (a listener commits nothing)."""
        self._watchdog: JoinWatchdog | None = None  # on tansu only
        self._sends_retries = False
        self._deleted = False  # the topic was deleted through this broker connection
        self._paused = False
        self._poller: asyncio.Task[None] | None = None  # a group member's poll-clock keeper
        self._poll_error: Exception | None = None  # an error the keeper's poll took: the next fetch raises it

    @property
    def client(self) -> AIOKafkaConsumer:
        assert self._client is not None
        return self._client

    # -- joining ---------------------------------------------------------------------------------

    async def _open(self) -> None:
        self.topic.broker.watch(self)
        try:
            if self.group is None:
                await self._open_listener()
            else:
                await self._open_member()
        except BaseException:
            await self._stop_client()
            raise

    async def _open_listener(self) -> None:
        broker = self.topic.broker
        tps = await broker.partitions(self.topic.name)
        if self._start == "earliest":
            ends = await broker.admin.start_offsets(tps)
        else:
            ends = await broker.admin.end_offsets(tps)
        self._client = broker.new_consumer()
        with translated(f"opening a listener on {self.topic.name!r}"):
            await self._client.start()
            self._client.assign(tps)
            for tp in tps:
                self._client.seek(tp, ends[tp])
                self._trackers[tp] = PartitionTracker(tp, ends[tp])

    async def _open_member(self) -> None:
        broker, s = self.topic.broker, self.topic.broker.settings
        assert self._retry is not None and self.group is not None
        broker.use(self._retry)  # for the retry copies; released in _stop_client
        self._sends_retries = True
        await broker.create_topic(self._retry, s.retry_partitions or s.partitions)
        assignor = BusyAwareAssignor(self._busy_partitions)
        gid = group_id(self.topic.name, self.group)
        self._client = broker.new_consumer(
            group_id=gid,
            auto_offset_reset="earliest",
            session_timeout_ms=s.session_timeout_ms,
            heartbeat_interval_ms=s.heartbeat_interval_ms,
            rebalance_timeout_ms=s.rebalance_timeout_ms,
            max_poll_interval_ms=s.max_poll_interval_ms,
            partition_assignment_strategy=(assignor,),
        )
        with translated(f"joining group {self.group!r} of {self.topic.name!r}"):
            await self._client.start()
            if broker.tansu is not None:
                topics = (self.topic.name, self._retry)
                self._watchdog = broker.tansu.watchdog(gid, topics, lambda: self._client, assignor)
            self._client.subscribe([self.topic.name, self._retry], listener=_Rebalance(self))
            try:
                async with asyncio.timeout(s.join_timeout):  # not wait_for: it can swallow a cancel (3.11)
                    await self._assigned.wait()
            except TimeoutError:
                raise OperationTimeout(
                    f"could not join group {self.group!r} of {self.topic.name!r} within {s.join_timeout}s"
                ) from None
        assert self._commits is not None
        self._commits.start()
        self._poller = asyncio.get_running_loop().create_task(self._keep_polling())

    def _busy_partitions(self) -> list[tuple[str, int]]:
        return [(tp.topic, tp.partition) for tp, t in self._trackers.items() if t.alive and t.busy]

    async def _on_revoked(self, revoked: list[TopicPartition]) -> None:
        if self._watchdog is not None:
            self._watchdog.joining()
        await self._flush_acks()  # the acks the core still queues count as settled too
        if self._commits is not None:  # keep what is settled; the rest is redelivered by the next owner
            await self._commits.commit()

    async def _on_assigned(self, assigned: list[TopicPartition]) -> None:
        if self._client is None:  # the consumer closed while the group rebalanced
            return
        keep = set(assigned)
        for tp, tracker in list(self._trackers.items()):
            if tp not in keep:
                tracker.alive = False
                del self._trackers[tp]
        self._forget_dead()
        client = self.client
        new = [tp for tp in assigned if tp not in self._trackers]
        for tp in assigned:
            if tp in self._trackers:  # kept: go on after what we already hold, do not re-read it
                client.seek(tp, self._trackers[tp].next_offset)
        # aiokafka hands out records of the new assignment while this callback still awaits the
        # broker below; a record of a partition without a tracker yet would be skipped (and a later
        # commit would pass it), so the new partitions stay paused until their trackers exist.
        client.pause(*new)
        try:
            await self._track_new(new)
        finally:
            still_open = self._client is not None
            if still_open:
                with contextlib.suppress(kerrors.IllegalStateError):
                    client.resume(*new)
                self._paused = False  # a new assignment starts unpaused: pause the retry topic again if full
                with contextlib.suppress(kerrors.IllegalStateError):
                    self._pause_retry()
        if self._watchdog is not None:
            self._watchdog.joined()
        self._assigned.set()

    async def _track_new(self, new: list[TopicPartition]) -> None:
        """Set up trackers of newly assigned partitions (a new group starts at the end of each)."""
        if not new:
            return
        client, broker = self.client, self.topic.broker
        gid = group_id(self.topic.name, self.group or "")
        committed: dict[TopicPartition, int] = {}
        try:
            committed = await broker.admin.committed(gid, new)
            fresh = [tp for tp in new if tp.topic == self.topic.name and tp not in committed]
            if self._start == "earliest":
                fresh = []  # a new group replays the log from its start (auto_offset_reset)
            if fresh:  # a new group: it starts with the messages sent from now on
                ends = await broker.admin.end_offsets(fresh)
                for tp in fresh:
                    client.seek(tp, ends[tp])
                    committed[tp] = ends[tp]
                await client.commit({tp: ends[tp] for tp in fresh})
        except (PolybusError, kerrors.KafkaError) as exc:
            # positions then come from the commits, or the start of the log: duplicates, never loss
            log.warning("group %s: setting start offsets failed (%s)", gid, exc)
        for tp in new:
            self._trackers[tp] = PartitionTracker(tp, committed.get(tp, 0))

    def _forget_dead(self) -> None:
        """Drop buffered and delayed deliveries of partitions this member no longer owns."""
        self._drop_buffered(lambda d: not d.native[0].alive)
        self._retries.drop(lambda d: not d.native[0].alive)

    # -- fetching --------------------------------------------------------------------------------

    async def _fetch(self, max_messages: int, timeout: float) -> list[Delivery]:
        # aiokafka reads ahead in the background, so a small chunk costs no round trip, and it keeps
        # the garbage collector quiet: a few hundred live deliveries more trigger young-generation
        # collections that promote them, then full collections (measured: 25% of consume throughput)
        if self._deleted:
            raise NotFoundError(f"topic {self.topic.name!r} was deleted")
        if self._poll_error is not None:
            error, self._poll_error = self._poll_error, None
            with translated(f"fetching from {self.topic.name!r}"):
                raise error
        max_messages = min(max_messages, _CHUNK)
        now = time.time()
        retries = self._retries
        if retries.heap:
            out = retries.pop_due(now, max_messages)
            if out:
                return out
            timeout = max(0.0, min(timeout, (retries.next_due() or now) - now))
        else:
            out = []
        with translated(f"fetching from {self.topic.name!r}"):
            records = await self.client.getmany(timeout_ms=0, max_records=max_messages)
            if not records and timeout > 0:
                records = await self._wait_for_records(timeout, max_messages)
        now = time.time()
        make = self._delivery
        for tp, batch in records.items():
            tracker = self._trackers.get(tp)
            if tracker is None or not tracker.alive:
                if tracker is None and batch and tp in self.client.assignment():
                    # assigned, but its tracker is not set up yet: read these again later
                    self.client.seek(tp, batch[0].offset)
                continue  # revoked while fetching: the new owner reads it from the last commit
            if batch and batch[0].offset < tracker.next_offset:  # re-read after a seek: skip what we hold
                batch = [r for r in batch if r.offset >= tracker.next_offset]
            if not batch:
                continue
            tracker.add_fetched([r.offset for r in batch])
            if tp.topic != self._retry:
                out += [make(r, tracker) for r in batch]
                continue
            for record in batch:
                delivery = make(record, tracker, True)
                due = due_time(record.headers)
                if due > now:
                    retries.hold(due, delivery)
                else:
                    out.append(delivery)
        self._pause_retry()
        return out

    async def _wait_for_records(self, timeout: float, max_messages: int) -> dict[TopicPartition, list[Any]]:
        """``getmany`` that ``_interrupt`` can end early (the consumer is closing)."""
        self._wakeup.clear()
        fetch = asyncio.ensure_future(
            self.client.getmany(timeout_ms=int(timeout * 1000), max_records=max_messages)
        )
        woken = asyncio.ensure_future(self._wakeup.wait())
        try:
            await asyncio.wait({fetch, woken}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # the receive was cancelled: records fetched meanwhile are read again
            if fetch.done() and not fetch.cancelled() and fetch.exception() is None:
                self._unread(fetch.result())
            raise
        finally:
            woken.cancel()
            if not fetch.done():
                fetch.cancel()
        try:
            records: dict[TopicPartition, list[Any]] = await fetch
            return records
        except asyncio.CancelledError:
            if not fetch.cancelled():
                raise
            return {}

    def _unread(self, records: dict[TopicPartition, list[Any]]) -> None:
        """Records aiokafka handed over that no delivery was made of: seek back, so they come again."""
        client = self._client
        for tp, batch in records.items():
            if batch and client is not None:
                with contextlib.suppress(kerrors.IllegalStateError):  # revoked: the next owner reads it
                    client.seek(tp, batch[0].offset)

    def _pause_retry(self) -> None:
        if self._retry is None:
            return
        full = self._retries.full
        if full != self._paused:
            tps = [tp for tp in self._trackers if tp.topic == self._retry]
            (self.client.pause if full else self.client.resume)(*tps)
            self._paused = full

    def _delivery(self, record: Any, tracker: PartitionTracker, retry: bool = False) -> Delivery:
        # the hot path of consuming: what polybus sends for bytes without headers, else one pass
        attempt = 1
        pairs = record.headers
        try:
            if len(pairs) == 1 and pairs[0][0] == ID_HEADER and not retry:
                headers = {CONTENT_TYPE: BYTES}  # implied by polybus-id (see _wire.record_headers)
                message_id: str | None = pairs[0][1].decode()
            else:
                headers, message_id, attempt = read_headers(pairs, retry)
        except (UnicodeDecodeError, AttributeError, TypeError):  # not UTF-8, a header without a value...
            headers, message_id, attempt = read_headers(pairs, retry)
        key = record.key
        value = record.value
        delivery = Delivery(
            self,
            message_id or f"{record.topic}-{record.partition}-{record.offset}",
            self.topic.name,
            b"" if value is None else value,
            headers,
            None if key is None else key.decode("utf-8", "backslashreplace"),
            record.timestamp / 1000,
            attempt,
            (tracker, record.offset),
        )
        return delivery

    def _interrupt(self) -> None:
        self._wakeup.set()

    async def _keep_polling(self) -> None:
        """Keep the member in its group while its handlers outlive ``max_poll_interval_ms``.

        aiokafka makes a member leave its group when ``getmany`` was not called for
        ``max_poll_interval_ms``, and the core stops fetching while the consumer is full (every
        prefetch slot held by a running handler): a handler longer than that interval had its
        partitions, and its message, handed to another member while it ran. A ``getmany`` of a
        partition nobody has returns nothing and takes no record, but it counts as a poll; it
        runs every third of the interval while the consumer is open, as NATS's ``+WPI`` and
        SQS's visibility extension do. A hung handler therefore holds its partition, as it holds
        its message on the other brokers.
        """
        interval = self.topic.broker.settings.max_poll_interval_ms / 3000
        nowhere = TopicPartition(self.topic.name, -1)
        while True:
            await asyncio.sleep(interval)
            client = self._client
            if client is None:
                return
            try:
                await client.getmany(nowhere, timeout_ms=0)
            except (kerrors.KafkaError, kerrors.ConsumerStoppedError, kerrors.IllegalStateError) as exc:
                self._poll_error = exc  # a pending error of the group: the next fetch raises it
                self._wakeup.set()

    # -- settling --------------------------------------------------------------------------------

    async def _ack_batch(self, deliveries: list[Delivery]) -> None:
        # acks are bookkeeping: each marks its offset, and the commit loop commits the settled prefix
        moved = False
        for delivery in deliveries:
            tracker, offset = delivery.native
            if tracker.done(offset) and tracker.alive:
                moved = True
        # a listener settles offsets too (else they pile up), but only a group member commits
        if moved and self._commits is not None:
            self._commits.dirty.set()

    def _settled(self, delivery: Delivery) -> None:
        tracker, offset = delivery.native
        if tracker.done(offset) and tracker.alive and self._commits is not None:
            self._commits.dirty.set()

    async def _settle_native(self, delivery: Delivery, outcome: Outcome, delay: float | None) -> None:
        tracker = delivery.native[0]
        if (
            outcome is Outcome.NACK
            and tracker.alive
            and (self._retry is None or not await self._retries.send_copy(delivery, delay))
        ):
            self._requeue(delivery, delay)  # in memory: the offset stays unsettled meanwhile
            return
        self._settled(delivery)  # a reject, or a nack whose copy is safe on the retry topic

    def _requeue(self, delivery: Delivery, delay: float | None) -> None:
        again = Delivery(
            self,
            id=delivery.id,
            topic=delivery.topic,
            body=delivery.body,
            headers=delivery.headers,
            key=delivery.key,
            timestamp=delivery.timestamp,
            attempt=delivery.attempt + 1,
            native=delivery.native,
        )
        self._retries.hold(time.time() + (delay or 0.0), again)
        self._wakeup.set()

    # -- leaving ---------------------------------------------------------------------------------

    async def _release(self, deliveries: list[Delivery]) -> None:
        await self._stop_watchdog()
        if self._commits is not None:  # unsettled offsets stay uncommitted: the group reads them again
            await self._commits.stop()
            await self._commits.commit()
        for tracker in self._trackers.values():
            tracker.alive = False
        self._retries.clear()
        await self._stop_client()

    async def _stop_watchdog(self) -> None:
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None:
            await watchdog.stop()

    def topic_deleted(self) -> None:
        """The topic was deleted (through this broker connection): stop reading, raise NotFoundError.

        The client unsubscribes (a subscription would make an auto-creating broker create the topic
        again); what was fetched and not handed out is dropped, and nothing more is committed.
        """
        self._deleted = True
        for tracker in self._trackers.values():
            tracker.alive = False
        self._drop_buffered(lambda d: True)
        self._retries.clear()
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.unsubscribe()
        self._wakeup.set()

    async def _stop_client(self) -> None:
        self.topic.broker.unwatch(self)
        poller, self._poller = self._poller, None
        if poller is not None:
            poller.cancel()
            await asyncio.wait({poller})  # a cancellation of the caller still propagates
        await self._stop_watchdog()
        if self._sends_retries and self._retry is not None:
            self._sends_retries = False
            self.topic.broker.release(self._retry)
        client, self._client = self._client, None
        if client is None:
            return
        tansu = self.topic.broker.tansu
        if tansu is not None and self.group is not None:
            await tansu.stop_member(client, group_id(self.topic.name, self.group))
            return
        with contextlib.suppress(Exception):
            await client.stop()


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, consumer: KafkaConsumer) -> None:
        self._consumer = consumer

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self._consumer._on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        await self._consumer._on_assigned(assigned)
