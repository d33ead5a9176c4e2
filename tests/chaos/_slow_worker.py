"""The consumer of ``test_slow_consumer``: a handler of ``HANDLER_SECONDS`` behind a fast producer.

Run as a process of its own (``python tests/chaos/_slow_worker.py URL TOPIC GROUP PREFETCH
CONCURRENCY``) so that its resident set size is the consumer's alone; memory:// runs it in the
test's process (:class:`SlowConsumer`). The process prints one JSON line ``{"ready": rss}`` once
its consumer has joined, then reads one JSON line ``{"expect": [ids], "timeout": s}``: it notes
the figures of the slow phase, handles the rest of the backlog without sleeping until every
expected id was delivered, and prints ``{"slow": figures, "snapshot": ledger snapshot}``.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import psutil

import polybus
from polybus.testing import Ledger

HANDLER_SECONDS = 0.05
SAMPLE_INTERVAL = 0.02


class SlowConsumer:
    """One consumer of a group whose handler sleeps ``HANDLER_SECONDS`` until told to drain."""

    def __init__(self) -> None:
        self.ledger = Ledger()
        self.slow = True
        self.max_in_flight = 0
        self.max_rss = 0
        self.consumer: polybus.Consumer | None = None
        self._process = psutil.Process()

    def rss(self) -> int:
        return int(self._process.memory_info().rss)

    def _note_in_flight(self) -> None:
        if self.consumer is not None:
            self.max_in_flight = max(self.max_in_flight, self.consumer.in_flight)

    async def handle(self, delivery: polybus.Delivery) -> None:
        self.ledger.record(delivery)
        self._note_in_flight()
        if self.slow:
            await asyncio.sleep(HANDLER_SECONDS)

    async def _sample(self) -> None:
        while True:
            self._note_in_flight()
            if self.slow:
                self.max_rss = max(self.max_rss, self.rss())
            await asyncio.sleep(SAMPLE_INTERVAL)

    async def run(
        self,
        url: str,
        topic: str,
        group: str,
        prefetch: int,
        concurrency: int,
        ready: Callable[[int], None],
        finish: Callable[[], Awaitable[tuple[list[str], float]]],
    ) -> dict[str, Any]:
        stop = asyncio.Event()
        async with (
            polybus.connect(url) as broker,
            broker.topic(topic).consumer(group, prefetch=prefetch) as consumer,
        ):
            self.consumer = consumer
            baseline = self.rss()
            self.max_rss = baseline
            sampler = asyncio.create_task(self._sample())
            runner = asyncio.create_task(
                polybus.run_consumer(consumer, self.handle, concurrency=concurrency, stop=stop)
            )
            ready(baseline)
            expect, timeout = await finish()
            self._note_in_flight()
            slow = {
                "rss_baseline": baseline,
                "rss_max": max(self.max_rss, self.rss()),
                "rss_end": self.rss(),
                "max_in_flight": self.max_in_flight,
                "delivered": self.ledger.report().delivered,
            }
            self.slow = False
            self.ledger.confirmed(expect)
            await self.ledger.wait_complete(timeout)
            stop.set()
            await runner
            sampler.cancel()
            slow["max_in_flight"] = self.max_in_flight  # the whole run, drain included
        return {"slow": slow, "snapshot": self.ledger.snapshot()}


async def _main(url: str, topic: str, group: str, prefetch: int, concurrency: int) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 28)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    def ready(rss: int) -> None:
        print(json.dumps({"ready": rss}), flush=True)

    async def finish() -> tuple[list[str], float]:
        line = json.loads(await reader.readline())
        return line["expect"], float(line["timeout"])

    result = await SlowConsumer().run(url, topic, group, prefetch, concurrency, ready, finish)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    url, topic, group, prefetch, concurrency = sys.argv[1:6]
    asyncio.run(_main(url, topic, group, int(prefetch), int(concurrency)))
