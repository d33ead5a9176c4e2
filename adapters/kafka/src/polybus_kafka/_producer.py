"""``KafkaProducer``, and ``publish``: how polybus messages become confirmed Kafka records.

Keyed messages go to the partition the Java client would pick (murmur2 of the key), so per-key
order holds and raw clients agree. Unkeyed messages are sticky, like the Java client's default
partitioner: the messages of one ``send_many`` fill a record batch (``max_batch_size``) on one
partition, then the next batch goes to the next partition, and each call starts on the partition
after the previous call's. Every batch is awaited (``acks=all``) before ``send_many`` returns.
Imports aiokafka, polybus, polybus.adapter and this package's modules.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import itertools
import random
import time
from typing import TYPE_CHECKING, Any

from aiokafka.partitioner import murmur2

from polybus import BrokerConnectionError, PublishError
from polybus.adapter import Message, Producer, new_message_id
from polybus_kafka._compat import fast_append, set_record_count
from polybus_kafka._errors import translated
from polybus_kafka._wire import ID_HEADER, record_headers

if TYPE_CHECKING:
    from polybus_kafka._broker import KafkaBroker, KafkaTopic

__all__ = ["KafkaProducer", "publish"]

_ROUND_ROBIN = itertools.count(random.randrange(1 << 16))


@functools.lru_cache(maxsize=4096)
def _hash(key: str) -> int:
    return int(murmur2(key.encode())) & 0x7FFFFFFF


async def publish(
    broker: KafkaBroker, topic: str, messages: list[Message], extra: list[dict[str, str]] | None = None
) -> None:
    """Store ``messages`` on ``topic`` and wait until the broker confirmed all of them.

    ``extra`` gives additional headers per message (the retry copies' attempt and due time).
    """
    with translated(f"sending to topic {topic!r}", default=PublishError):
        producer = broker.producer
        partitions = sorted(await producer.partitions_for(topic))
        count = len(partitions)
        start = next(_ROUND_ROBIN)
        if len(messages) == 1:  # aiokafka's accumulator batches concurrent single sends
            m = messages[0]
            partition = partitions[(_hash(m.key) if m.key is not None else start) % count]
            future = await producer.send(
                topic,
                m.body,
                key=None if m.key is None else m.key.encode(),
                partition=partition,
                timestamp_ms=int(m.timestamp * 1000),
                headers=record_headers(m, extra[0] if extra else None),
            )
            await future
            return
        if all(m.key is None for m in messages):  # sticky: whole record batches, partition after partition
            futures = await _send_records(broker, topic, partitions, start, messages, extra)
        else:
            pipelines = [
                _send_records(
                    broker,
                    topic,
                    [partition],
                    0,
                    [messages[i] for i in idx],
                    extra and [extra[i] for i in idx],
                )
                for partition, idx in _by_key(messages, partitions, start).items()
            ]
            futures = [f for fs in await asyncio.gather(*pipelines) for f in fs]
        await asyncio.gather(*futures)


async def publish_bodies(broker: KafkaBroker, topic: str, bodies: list[bytes], ids: list[str]) -> None:
    """Store one record per body, as :func:`publish` stores ``Message.of(body)``, with id ``ids[i]``.

    The hot path of ``send_many`` with bytes: no ``Message`` objects, the records go straight into
    sticky record batches. The records are the same as those of the general path.
    """
    with translated(f"sending to topic {topic!r}", default=PublishError):
        partitions = sorted(await broker.producer.partitions_for(topic))
        batches = _Batches(broker, topic, partitions, next(_ROUND_ROBIN))
        timestamp = int(time.time() * 1000)
        append, n = batches.append, 0
        for body, message_id in zip(bodies, ids, strict=True):
            headers = [(ID_HEADER, message_id.encode())]  # no content-type: bytes (see record_headers)
            if append(n, timestamp, None, body, headers) is None:
                append, n = await batches.next(n), 0
                append(n, timestamp, None, body, headers)  # the first record of a batch always fits
            n += 1
        await asyncio.gather(*await batches.finish(n))


def _by_key(messages: list[Message], partitions: list[int], start: int) -> dict[int, list[int]]:
    """Indexes of ``messages`` by partition: keyed ones by the key's hash, the others round-robin."""
    count = len(partitions)
    by_partition: dict[int, list[int]] = collections.defaultdict(list)
    for i, m in enumerate(messages):
        index = _hash(m.key) if m.key is not None else start + i
        by_partition[partitions[index % count]].append(i)
    return by_partition


async def _send_records(
    broker: KafkaBroker,
    topic: str,
    partitions: list[int],
    start: int,
    messages: list[Message],
    extra: list[dict[str, str]] | None,
) -> list[asyncio.Future[Any]]:
    """Pack ``messages`` into record batches and hand each to the producer; return their futures."""
    batches = _Batches(broker, topic, partitions, start)
    append, n = batches.append, 0
    last_time, timestamp = None, 0
    for i, m in enumerate(messages):
        key = None if m.key is None else m.key.encode()
        headers = record_headers(m, extra[i] if extra else None)
        if m.timestamp != last_time:  # the messages of one send_many share their send time
            last_time = m.timestamp
            timestamp = int(last_time * 1000)
        if append(n, timestamp, key, m.body, headers) is None:
            append, n = await batches.next(n), 0
            append(n, timestamp, key, m.body, headers)  # the first record of a batch always fits
        n += 1
    return await batches.finish(n)


class _Batches:
    """Record batches for ``topic``: the first goes to ``partitions[start % len]``, each next one to
    the next partition; each is handed to the producer as soon as it is full.

    ``append(offset, timestamp_ms, key, value, headers)`` adds the record at ``offset`` within the
    current batch and returns None once it is full. The hot loops call aiokafka's record builder (C)
    directly: its ``BatchBuilder.append`` wrapper costs as much again per record. Where that builder
    is not there (another aiokafka version), the public ``append`` is used (``_compat.fast_append``).
    """

    def __init__(self, broker: KafkaBroker, topic: str, partitions: list[int], start: int) -> None:
        self.broker, self.topic, self.partitions, self.start = broker, topic, partitions, start
        self.futures: list[asyncio.Future[Any]] = []
        self._new_batch()

    def _new_batch(self) -> None:
        batch = self.batch = self.broker.producer.create_batch()
        fast = fast_append(batch)
        if fast is not None:
            self.append: Any = fast
        else:

            def public(_offset: int, timestamp: int, key: bytes | None, value: bytes, headers: Any) -> Any:
                return batch.append(key=key, value=value, timestamp=timestamp, headers=headers)

            self.append = public

    async def next(self, records: int) -> Any:
        """Ship the current batch of ``records`` records; return the ``append`` of the next one."""
        await self._ship(records)
        self.start += 1
        self._new_batch()
        return self.append

    async def finish(self, records: int) -> list[asyncio.Future[Any]]:
        """Ship the last batch; return the futures of all, each resolved once the broker confirmed it."""
        await self._ship(records)
        return self.futures

    async def _ship(self, records: int) -> None:
        batch, broker = self.batch, self.broker
        set_record_count(batch, records)  # appended past the wrapper: keep its record count right
        partition = self.partitions[self.start % len(self.partitions)]
        # one batch at a time per partition, first come first served: aiokafka's own wait for a free
        # slot is unfair and times out under many concurrent senders
        async with broker.batch_locks[(self.topic, partition)]:
            self.futures.append(await broker.producer.send_batch(batch, self.topic, partition=partition))


class KafkaProducer(Producer):
    """Sends to one Kafka topic through the broker's shared aiokafka producer (``acks=all``).

    A send that fails on a lost connection is retried with the broker's ``reconnect`` policy; one
    that still fails raises (it may or may not have been stored), it never vanishes.
    """

    topic: KafkaTopic

    async def _open(self) -> None:
        self.topic.broker.use(self.topic.name)  # first: ensure() then keeps the topic's metadata
        try:
            await super()._open()
        except BaseException:
            self.topic.broker.release(self.topic.name)
            raise

    async def _aclose(self) -> None:
        try:
            await super()._aclose()
        finally:
            self.topic.broker.release(self.topic.name)

    async def _publish(self, messages: list[Message]) -> list[str]:
        broker = self.topic.broker
        await broker.settings.reconnect.run(
            lambda: publish(broker, self.topic.name, messages),
            retry_on=(BrokerConnectionError,),
            what=f"sending to {self.topic.name!r}",
        )
        return [m.id for m in messages]

    async def _publish_bodies(self, bodies: list[bytes]) -> list[str]:
        broker = self.topic.broker
        ids = new_message_id.many(len(bodies))  # once: a retry after a reconnect resends the same ids
        await broker.settings.reconnect.run(
            lambda: publish_bodies(broker, self.topic.name, bodies, ids),
            retry_on=(BrokerConnectionError,),
            what=f"sending to {self.topic.name!r}",
        )
        return ids
