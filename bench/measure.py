"""What one benchmark cycle measures, and how: the driver interface, the cycle, RSS sampling.

A *driver* moves messages through one broker one way (polybus, or the raw client library). A
*cycle* gives a driver a fresh topic and group, then measures, each phase bounded by a message
count and a deadline:

- publish: ``messages`` bodies, each confirmed by the broker -> messages/s;
- consume: drain that backlog, every message acked -> messages/s, and the process's peak RSS;
- round trip: ``roundtrips`` times send one message, receive it, ack it -> p50/p99 in ms.

One cycle runs in its own process (see run.py), so the RSS figure is that driver's alone.
"""

from __future__ import annotations

import dataclasses
import statistics
import threading
import time
import uuid
from typing import Any

__all__ = ["CycleResult", "Driver", "RssSampler", "percentile", "run_cycle"]


class Driver:
    """One way of driving a broker. Every method must return by ``deadline`` (``time.monotonic()``)."""

    label = "driver"

    async def setup(self, topic: str, group: str) -> None:
        """Connect; create the topic and the group (so the group sees everything published next)."""

    async def publish(self, body: bytes, count: int, deadline: float) -> int:
        """Publish ``count`` copies of ``body``; return how many the broker confirmed."""
        raise NotImplementedError

    async def consume(self, count: int, deadline: float) -> int:
        """Receive and ack up to ``count`` messages of the group; return how many."""
        raise NotImplementedError

    async def roundtrip(self, body: bytes, deadline: float) -> bool:
        """Send one message, receive it through the group, ack it; False if it did not arrive."""
        raise NotImplementedError

    async def teardown(self) -> None:
        """Delete the topic and group (best effort) and disconnect."""


@dataclasses.dataclass
class CycleResult:
    """The figures of one cycle of one driver (``None`` where a phase did not run)."""

    driver: str
    published: int = 0
    publish_rate: float | None = None
    consumed: int = 0
    consume_rate: float | None = None
    consume_peak_rss_mib: float | None = None
    roundtrips: int = 0
    p50_ms: float | None = None
    p99_ms: float | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class RssSampler:
    """Samples this process's resident set size in a thread; ``peak_mib`` is the highest seen."""

    def __init__(self, interval: float = 0.02) -> None:
        import psutil

        self._process = psutil.Process()
        self._interval = interval
        self._peak = self._process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._peak = max(self._peak, self._process.memory_info().rss)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._peak = max(self._peak, self._process.memory_info().rss)

    @property
    def peak_mib(self) -> float:
        return self._peak / (1024 * 1024)


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of ``values``, nearest-rank."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


async def run_cycle(
    driver: Driver, *, messages: int, size: int, roundtrips: int, phase_seconds: float
) -> CycleResult:
    """Measure publish, consume and round trips for ``driver`` on a fresh topic and group."""
    result = CycleResult(driver.label)
    body = (b"polybus-bench-" * (size // 14 + 1))[:size]
    suffix = uuid.uuid4().hex[:10]
    await driver.setup(f"bench-{suffix}", f"bench-g-{suffix}")
    try:
        start = time.perf_counter()
        result.published = await driver.publish(body, messages, time.monotonic() + phase_seconds)
        result.publish_rate = result.published / (time.perf_counter() - start)

        with RssSampler() as rss:
            start = time.perf_counter()
            result.consumed = await driver.consume(result.published, time.monotonic() + phase_seconds)
            elapsed = time.perf_counter() - start
        result.consume_rate = result.consumed / elapsed
        result.consume_peak_rss_mib = rss.peak_mib
        if result.consumed < result.published:
            result.error = f"consumed {result.consumed} of {result.published} within {phase_seconds:.0f}s"

        latencies: list[float] = []
        deadline = time.monotonic() + phase_seconds
        for _ in range(roundtrips):
            if time.monotonic() >= deadline:
                break
            start = time.perf_counter()
            if not await driver.roundtrip(body, deadline):
                result.error = "a round-trip message did not arrive"
                break
            latencies.append((time.perf_counter() - start) * 1000)
        result.roundtrips = len(latencies)
        if latencies:
            result.p50_ms = statistics.median(latencies)
            result.p99_ms = percentile(latencies, 99)
    finally:
        await driver.teardown()
    return result
