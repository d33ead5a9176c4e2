"""``KafkaProducer``, and ``publish``: how polybus messages become confirmed Kafka records.

Keyed messages go to the partition the Java client would pick (murmur2 of the key), so per-key
order holds and raw clients agree; unkeyed messages are spread round-robin over the partitions.
Several messages are packed into record batches, one pipeline per partition, and every batch is
awaited (``acks=all``) before ``send_many`` returns. Imports aiokafka, polybus core modules and
this package's modules.
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
        by_partition: dict[int, list[int]] = collections.defaultdict(list)
        for i, m in enumerate(messages):
            index = _hash(m.key) if m.key is not None else start + i
            by_partition[partitions[index % count]].append(i)
        pipelines = [
            _send_partition(producer, topic, p, [messages[i] for i in idx], extra and [extra[i] for i in idx])
            for p, idx in by_partition.items()
        ]
        futures = [f for fs in await asyncio.gather(*pipelines) for f in fs]
        await asyncio.gather(*futures)


async def _send_partition(
    producer: Any, topic: str, partition: int, messages: list[Message], extra: list[dict[str, str]] | None
) -> list[asyncio.Future[Any]]:
    futures = []
    batch = producer.create_batch()
    for i, m in enumerate(messages):
        key = None if m.key is None else m.key.encode()
        headers = record_headers(m, extra[i] if extra else None)
        timestamp = int(m.timestamp * 1000)
        if batch.append(key=key, value=m.body, timestamp=timestamp, headers=headers) is None:
            # full: ship it and start the next one (the first record of a batch always fits)
            futures.append(await producer.send_batch(batch, topic, partition=partition))
            batch = producer.create_batch()
            batch.append(key=key, value=m.body, timestamp=timestamp, headers=headers)
    futures.append(await producer.send_batch(batch, topic, partition=partition))
    return futures


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
