"""Kafka driven at its best with aiokafka: record batches of ``batch`` records built by hand and
shipped with ``send_batch`` (acks=all, one partition per batch in turn, ``window`` batches under way,
every one awaited), and ``getmany`` of up to 1,000 records with one commit per batch.

With ``headers`` (``--raw-headers``) the records carry the header polybus writes for a body of
bytes (``polybus-id``), so the raw column shows what the same records cost without polybus."""

from __future__ import annotations

import time
from typing import Any

from measure import Driver

from polybus.testing._provision_probe import kafka_bootstrap

__all__ = ["RawKafka"]

BATCH = 1000


class RawKafka(Driver):
    """A topic of ``partitions`` partitions and a group that joins before anything is published."""

    label = "raw"

    def __init__(
        self, url: str, *, partitions: int = 1, batch: int = 500, window: int = 1, headers: bool = False
    ) -> None:
        self.bootstrap = kafka_bootstrap(url)
        self.headers = headers  # write the records polybus writes for bytes: a 32-hex-digit polybus-id
        self.partitions = partitions
        self.batch = batch
        self.window = window
        self.producer: Any = None
        self.consumer: Any = None
        self.admin: Any = None

    async def setup(self, topic: str, group: str) -> None:
        from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic

        self.topic = topic
        self.admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await self.admin.start()
        await self.admin.create_topics([NewTopic(topic, self.partitions, replication_factor=1)])
        self.producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap, acks="all", max_batch_size=512 * 1024, linger_ms=0
        )
        await self.producer.start()
        self.consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=self.bootstrap,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=BATCH,
        )
        await self.consumer.start()
        deadline = time.monotonic() + 30
        while not self.consumer.assignment() and time.monotonic() < deadline:
            await self.consumer.getmany(timeout_ms=200)

    async def publish(self, body: bytes, count: int, deadline: float) -> int:
        sent = 0
        queued = 0
        partition = 0
        under_way: list[tuple[int, Any]] = []
        while queued < count and time.monotonic() < deadline:
            chunk = min(self.batch, count - queued)
            batch = self.producer.create_batch()
            for n in range(queued, queued + chunk):
                headers = [("polybus-id", b"%032x" % n)] if self.headers else None
                if batch.append(key=None, value=body, timestamp=None, headers=headers) is None:  # full
                    under_way.append(
                        (0, await self.producer.send_batch(batch, self.topic, partition=partition))
                    )
                    batch = self.producer.create_batch()
                    batch.append(key=None, value=body, timestamp=None, headers=headers)
            under_way.append((chunk, await self.producer.send_batch(batch, self.topic, partition=partition)))
            partition = (partition + 1) % self.partitions
            queued += chunk
            while len(under_way) >= self.window:
                n, future = under_way.pop(0)
                await future  # resolves when the broker acknowledged the batch
                sent += n
        for n, future in under_way:
            await future
            sent += n
        return sent

    async def consume(self, count: int, deadline: float) -> int:
        received = 0
        while received < count and time.monotonic() < deadline:
            batches = await self.consumer.getmany(timeout_ms=1000, max_records=min(BATCH, count - received))
            got = sum(len(records) for records in batches.values())
            if got:
                await self.consumer.commit()
                received += got
        return received

    async def roundtrip(self, body: bytes, deadline: float) -> bool:
        await (await self.producer.send(self.topic, body))
        while time.monotonic() < deadline:
            batches = await self.consumer.getmany(timeout_ms=1000, max_records=1)
            if any(batches.values()):
                await self.consumer.commit()
                return True
        return False

    async def teardown(self) -> None:
        for client in (self.consumer, self.producer):
            if client is not None:
                await client.stop()
        if self.admin is not None:
            try:
                await self.admin.delete_topics([self.topic])
            finally:
                await self.admin.close()
