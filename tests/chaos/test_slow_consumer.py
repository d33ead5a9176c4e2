"""A slow consumer (a 50 ms handler) behind a fast producer: the consumer holds at most ``prefetch``
deliveries however deep the backlog grows, its process's memory stays bounded, and once it drains
nothing was lost.

The producer sends a backlog of about ``BACKLOG_BYTES`` in the first half of the slow phase (60 s at
full size, ``60 * scale()`` seconds in CI, at least 4), far faster than the consumer's
``CONCURRENCY / 0.05`` messages a second. The consumer runs in a process of its own (see
``_slow_worker.py``), which samples its ``in_flight`` count and resident set size (psutil).

The RSS bound, ``RSS_BOUND`` over the consumer's RSS once it has joined, is generous on purpose:
what a bounded consumer may hold is ``PREFETCH`` bodies (2 MiB at CI size), its client library's
read-ahead (aiokafka reads up to ``max_partition_fetch_bytes`` per partition ahead, 1 MiB x 8
partitions; the others read no further than polybus asks) and the allocator's slack; the backlog it
must not hold is 96-128 MiB at CI size. It is a bound on behaviour, not on timing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tests.chaos._slow_worker import SlowConsumer
from tests.chaos.conftest import Reliability, scale

import polybus
from polybus.testing import Ledger, unique_name

MiB = 1024 * 1024
PREFETCH = 32
CONCURRENCY = 8
IN_FLIGHT_MARGIN = 0
"""The core never holds more than ``prefetch`` (buffered plus handed out): no margin."""
RSS_BOUND = 50 * MiB
BACKLOG_BYTES = 128 * MiB
"""Bytes the producer sends in all: the body size is this over the message count."""
BATCH = 10
PRODUCERS = 2
WORKER = Path(__file__).with_name("_slow_worker.py")


@pytest.mark.polybus(timeout=400)
async def test_slow_consumer_memory_stays_bounded(
    chaos_broker: str, chaos_url: str, size: Callable[..., int], reliability: Reliability
) -> None:
    seconds = max(4.0, 60 * scale())
    messages = size(20_000, least=200)
    topic_name, group = unique_name("chaos-slow"), "slow"
    ledger = Ledger()
    async with polybus.connect(chaos_url) as broker:
        limit = broker.capabilities.max_message_size or MiB
        body = os.urandom(max(1024, min(BACKLOG_BYTES // messages, limit // 2)))
        topic = broker.topic(topic_name)
        await topic.ensure()
        async with topic.consumer(group, prefetch=1):
            pass  # the group exists before the first send
        try:
            async with _consumer(chaos_broker, chaos_url, topic_name, group) as (ready, finish):
                await ready
                started = time.monotonic()
                await _produce(topic, ledger, messages, body, seconds / 2)
                produced = time.monotonic() - started
                await asyncio.sleep(max(0.0, started + seconds - time.monotonic()))
                result = await finish(sorted(ledger.sent_ids), 120.0)
        finally:
            await topic.delete()
    slow = result["slow"]
    ledger.merge(result["snapshot"])
    report = ledger.report()
    growth = slow["rss_max"] - slow["rss_baseline"]
    figures = {
        "seconds_slow": round(seconds, 1),
        "seconds_producing": round(produced, 1),
        "body_bytes": len(body),
        "backlog_mib": round(messages * len(body) / MiB, 1),
        "delivered_slow": slow["delivered"],
        "prefetch": PREFETCH,
        "max_in_flight": slow["max_in_flight"],
        "rss_baseline_mib": round(slow["rss_baseline"] / MiB, 1),
        "rss_max_mib": round(slow["rss_max"] / MiB, 1),
        "rss_growth_mib": round(growth / MiB, 1),
    }
    reliability(report, **figures)
    print(f"\n[{chaos_broker}: {figures}]", file=sys.stderr)
    assert slow["max_in_flight"] <= PREFETCH + IN_FLIGHT_MARGIN, figures
    if chaos_broker != "memory":  # memory:// keeps the backlog in the consumer's own process
        assert growth < RSS_BOUND, f"the consumer's RSS grew by {growth / MiB:.1f} MiB: {figures}"
    report.check(max_duplicates=0)


async def _produce(topic: polybus.Topic, ledger: Ledger, messages: int, body: bytes, within: float) -> None:
    """``messages`` of ``body`` from ``PRODUCERS`` producers in batches, spread over ``within`` seconds."""
    per = -(-messages // PRODUCERS)
    batches = -(-per // BATCH)
    interval = within / batches

    async def produce(share: range) -> None:
        start = time.monotonic()
        async with topic.producer() as producer:
            for index, first in enumerate(range(share.start, share.stop, BATCH)):
                chunk = [polybus.Message(body) for _ in range(first, min(first + BATCH, share.stop))]
                while not await ledger.send(producer, chunk):  # noqa: ASYNC110
                    await asyncio.sleep(0.2)  # an at-least-once producer sends the batch again
                await asyncio.sleep(max(0.0, start + (index + 1) * interval - time.monotonic()))

    shares = [range(i, min(i + per, messages)) for i in range(0, messages, per)]
    await asyncio.gather(*(produce(share) for share in shares))


@contextlib.asynccontextmanager
async def _consumer(broker_name: str, url: str, topic: str, group: str) -> Any:
    """``(ready, finish)``: ``ready`` completes once the consumer joined; ``finish(ids, timeout)``
    ends the slow phase, drains until ``ids`` were delivered, and returns the worker's result."""
    if broker_name == "memory":  # the broker lives in this process: so must its consumer
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[int] = loop.create_future()
        expect: asyncio.Future[tuple[list[str], float]] = loop.create_future()
        worker = asyncio.create_task(
            SlowConsumer().run(url, topic, group, PREFETCH, CONCURRENCY, ready.set_result, lambda: expect)
        )

        async def finish_here(ids: list[str], timeout: float) -> dict[str, Any]:
            expect.set_result((ids, timeout))
            return await worker

        try:
            yield ready, finish_here
        finally:
            if not worker.done():
                worker.cancel()
                await asyncio.wait({worker})
        return
    child = await asyncio.create_subprocess_exec(
        sys.executable, str(WORKER), url, topic, group, str(PREFETCH), str(CONCURRENCY),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=1 << 28,
    )  # fmt: skip
    assert child.stdin is not None and child.stdout is not None
    stdin, stdout = child.stdin, child.stdout

    async def joined() -> int:
        line = await asyncio.wait_for(stdout.readline(), 90)
        assert line, f"the consumer process exited ({await child.wait()}) before joining"
        return int(json.loads(line)["ready"])

    async def finish(ids: list[str], timeout: float) -> dict[str, Any]:
        stdin.write(json.dumps({"expect": ids, "timeout": timeout}).encode() + b"\n")
        await stdin.drain()
        line = await asyncio.wait_for(stdout.readline(), timeout + 60)
        assert line, f"the consumer process exited ({await child.wait()}) without a result"
        result: dict[str, Any] = json.loads(line)
        return result

    try:
        yield joined(), finish
    finally:
        if child.returncode is None:
            child.kill()
        await child.wait()
