"""SQS driven well with boto3: send_message_batch of 10 and receive 10 + delete_message_batch,
several calls at once in threads (boto3 is blocking, so it stays off the event loop)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import time
from typing import Any

from measure import Driver

from polybus.testing._provision_probe import sqs_endpoint

__all__ = ["RawSqs"]

THREADS = 4


class RawSqs(Driver):
    """One SQS queue per group (the raw client skips the SNS topic polybus fans out through)."""

    label = "raw"

    def __init__(self, url: str) -> None:
        self.args = sqs_endpoint(url)
        self.client: Any = None
        self.pool = concurrent.futures.ThreadPoolExecutor(THREADS, thread_name_prefix="sqs-bench")

    async def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, functools.partial(fn, *args, **kwargs))

    async def setup(self, topic: str, group: str) -> None:
        import boto3
        from botocore.config import Config

        config = Config(max_pool_connections=THREADS * 2, retries={"max_attempts": 3, "mode": "standard"})
        self.client = boto3.session.Session().client("sqs", config=config, **self.args)
        created = await self._call(self.client.create_queue, QueueName=f"{topic}-{group}")
        self.queue_url = created["QueueUrl"]

    def _send_batch(self, body: str, count: int) -> int:
        entries = [{"Id": str(i), "MessageBody": body} for i in range(count)]
        response = self.client.send_message_batch(QueueUrl=self.queue_url, Entries=entries)
        return len(response.get("Successful", []))

    async def publish(self, body: bytes, count: int, deadline: float) -> int:
        text = body.decode()
        sent = 0
        while sent < count and time.monotonic() < deadline:
            sizes = [min(10, count - sent - 10 * i) for i in range(THREADS) if count - sent - 10 * i > 0]
            done = await asyncio.gather(*(self._call(self._send_batch, text, n) for n in sizes))
            sent += sum(done)
        return sent

    def _receive_and_delete(self, wait: int) -> int:
        response = self.client.receive_message(
            QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=wait
        )
        messages = response.get("Messages", [])
        if messages:
            entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)]
            self.client.delete_message_batch(QueueUrl=self.queue_url, Entries=entries)
        return len(messages)

    async def consume(self, count: int, deadline: float) -> int:
        received, wait = 0, 0
        while received < count and time.monotonic() < deadline:
            calls = max(1, min(THREADS, (count - received + 9) // 10))
            done = await asyncio.gather(*(self._call(self._receive_and_delete, wait) for _ in range(calls)))
            received += sum(done)
            wait = 0 if sum(done) else 1  # drain without waiting; long-poll only when the queue looks empty
        return received

    async def roundtrip(self, body: bytes, deadline: float) -> bool:
        await self._call(self.client.send_message, QueueUrl=self.queue_url, MessageBody=body.decode())
        while time.monotonic() < deadline:
            if await self._call(self._receive_and_delete, 1):
                return True
        return False

    async def teardown(self) -> None:
        if self.client is not None:
            await self._call(self.client.delete_queue, QueueUrl=self.queue_url)
            self.client.close()
        self.pool.shutdown(wait=False)
