"""``KafkaProducer``, and ``publish``: how polybus messages become confirmed Kafka records.

Keyed messages go to the partition the Java client would pick (murmur2 of the key), so per-key
order holds and raw clients agree. Unkeyed messages are sticky, like the Java client's default
partitioner: the messages of one ``send_many`` fill a record batch (``max_batch_size``) on one
partition, then the next batch goes to the next partition, and each call starts on the partition
after the previous call's. Every batch is awaited (``acks=all``) before ``send_many`` returns.
Imports aiokafka, polybus core modules and this package's modules.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import itertools
import random
from typing import TYPE_CHECKING, Any

from aiokafka.partitioner import murmur2

from polybus import BrokerConnectionError, Message, Producer, PublishError
from polybus_kafka._errors import translated
from polybus_kafka._wire import record_headers

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
    """Pack ``messages`` into record batches and hand each to the producer; return their futures.

    The first batch goes to ``partitions[start % len]``, each further one to the next partition.
    """
    producer = broker.producer
    futures = []
    count = len(partitions)
    batch = producer.create_batch()
    append = batch.append
    last_time, timestamp = None, 0
    for i, m in enumerate(messages):
        key = None if m.key is None else m.key.encode()
        headers = record_headers(m, extra[i] if extra else None)
        if m.timestamp != last_time:  # the messages of one send_many share their send time
            last_time = m.timestamp
            timestamp = int(last_time * 1000)
        if append(key=key, value=m.body, timestamp=timestamp, headers=headers) is None:
            # full: ship it and start the next one (the first record of a batch always fits)
            futures.append(await _ship(broker, batch, topic, partitions[start % count]))
            start += 1
            batch = producer.create_batch()
            append = batch.append
            append(key=key, value=m.body, timestamp=timestamp, headers=headers)
    futures.append(await _ship(broker, batch, topic, partitions[start % count]))
    return futures


async def _ship(broker: KafkaBroker, batch: Any, topic: str, partition: int) -> asyncio.Future[Any]:
    """Queue ``batch`` for ``partition``; the future resolves when the broker confirmed it."""
    async with broker.batch_locks[(topic, partition)]:
        future: asyncio.Future[Any] = await broker.producer.send_batch(batch, topic, partition=partition)
        return future


class KafkaProducer(Producer):
    """Sends to one Kafka topic through the broker's shared aiokafka producer (``acks=all``).

    A send that fails on a lost connection is retried with the broker's ``reconnect`` policy; one
    that still fails raises (it may or may not have been stored), it never vanishes.
    """

    topic: KafkaTopic

    async def _publish(self, messages: list[Message]) -> list[str]:
        broker = self.topic.broker
        await broker.settings.reconnect.run(
            lambda: publish(broker, self.topic.name, messages),
            retry_on=(BrokerConnectionError,),
            what=f"sending to {self.topic.name!r}",
        )
        return [m.id for m in messages]
