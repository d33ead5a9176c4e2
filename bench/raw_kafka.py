"""Kafka driven well with aiokafka: a window of unawaited sends (acks=all), getmany + one commit
per batch."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from measure import Driver

from polybus.testing._provision_probe import kafka_bootstrap

__all__ = ["RawKafka"]

WINDOW = 1000
BATCH = 500


class RawKafka(Driver):
    """A one-partition topic and a consumer group that joins before anything is published."""

    label = "raw"

    def __init__(self, url: str) -> None:
        self.bootstrap = kafka_bootstrap(url)
        self.producer: Any = None
        self.consumer: Any = None
        self.admin: Any = None

    async def setup(self, topic: str, group: str) -> None:
        from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic

        self.topic = topic
        self.admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await self.admin.start()
        await self.admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
        self.producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=2)
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
        while sent < count and time.monotonic() < deadline:
            chunk = min(WINDOW, count - sent)
            futures = [await self.producer.send(self.topic, body) for _ in range(chunk)]
            await asyncio.gather(*futures)  # each resolves when the broker acknowledged it
            sent += chunk
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
