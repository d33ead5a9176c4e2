"""Consumer-side faults: a consumer process SIGKILLed mid-stream, and a group rebalance storm.

The killed-process scenario runs its consumers as child processes (consumer_worker.py), each
booking every delivery it gets in a file of its own; the test merges the files into its
:class:`~polybus.testing.Ledger` as they grow. ``memory://`` lives inside one process, out of reach
of another: that scenario skips it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import random
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.chaos.conftest import Reliability, scale

import polybus
from polybus.testing import Ledger, run_stream, unique_name
from polybus.testing._urls import with_options

WORKER = Path(__file__).with_name("consumer_worker.py")

LEASES: dict[str, dict[str, object]] = {
    "redis": {"visibility_timeout": 2, "claim_interval": 0.25},
    "nats": {"ack_wait": 2},
    "sqs": {"visibility_timeout": 5},
}
"""URL options under which a dead consumer's deliveries come back within seconds: Redis claims
entries idle past ``visibility_timeout``, NATS redelivers after ``ack_wait``, SQS after the
visibility timeout. RabbitMQ requeues at once when the connection drops; a Kafka member's partitions
move after its session timeout (2 s on the test broker: ``TANSU_FAST_GROUPS``)."""

KILLS = 5
PREFETCH = 16
CONCURRENCY = 4
PROCESSES = 3
ACK_WINDOW = 0.5
"""Seconds within which a handled message's ack reaches the broker."""
COMMITS_OFFSETS = {"kafka"}
"""Brokers whose acks are offset commits, sent every ``commit_interval`` (Kafka): what a killed
process handled since its last commit is read again by the partition's next owner, on top of the
prefetch it held. Their duplicates may reach ``prefetch`` plus what the process handled in its last
``ACK_WINDOW``, per kill; elsewhere an ack leaves with the next fetch, and the broker holds at most
``prefetch`` unacked deliveries per consumer."""
ACKS_LINGER = COMMITS_OFFSETS | {"sqs"}
"""Brokers where a handled delivery's ack can still be on its way when the process dies, beyond the
prefetch window: Kafka's offset commits (above), and SQS, whose acks wait ``ack_linger`` to join a
DeleteMessageBatch and then a request to the server. Found at full size: 100 duplicates from five
kills of consumers with prefetch 16 (20 per kill) on SQS. Their allowance per kill is what the
process handled in its last ``ACK_WINDOW``."""


class Books:
    """The per-process delivery files of a scenario, merged into a ledger as they grow."""

    def __init__(self, folder: Path, ledger: Ledger) -> None:
        self.folder = folder
        self.ledger = ledger
        self.offsets: dict[Path, int] = {}
        self.lines: collections.Counter[Path] = collections.Counter()
        self.history: collections.deque[tuple[float, dict[Path, int]]] = collections.deque()

    def read(self) -> None:
        counts: collections.Counter[str] = collections.Counter()
        attempts: dict[str, int] = {}
        times: list[float] = []
        for path in sorted(self.folder.glob("book-*")):
            with path.open("rb") as book:
                book.seek(self.offsets.get(path, 0))
                data = book.read()
            whole = data[: data.rfind(b"\n") + 1]  # a cut last line is read once it is whole (or never)
            self.offsets[path] = self.offsets.get(path, 0) + len(whole)
            for line in whole.decode().splitlines():
                message_id, attempt, at = line.split()
                counts[message_id] += 1
                attempts[message_id] = max(attempts.get(message_id, 0), int(attempt))
                times.append(float(at))
                self.lines[path] += 1
        if counts:
            self.ledger.merge({"counts": counts, "attempts": attempts, "delivery_times": times})
        now = time.monotonic()
        self.history.append((now, dict(self.lines)))
        while self.history[0][0] < now - ACK_WINDOW:
            self.history.popleft()

    def recently(self, path: Path) -> int:
        """Deliveries booked in ``path`` within the last ``ACK_WINDOW`` (by the last read)."""
        return self.lines[path] - self.history[0][1].get(path, 0)

    async def follow(self) -> None:
        while True:
            self.read()
            await asyncio.sleep(0.05)


class Workers:
    """The consumer processes: started, killed and stopped by the scenario (none outlives it)."""

    def __init__(self, url: str, topic: str, folder: Path, sleep: float) -> None:
        self.args = (url, topic, "chaos", str(PREFETCH), str(CONCURRENCY), str(sleep))
        self.folder = folder
        self.running: dict[asyncio.subprocess.Process, Path] = {}
        self.started = 0

    async def start(self) -> None:
        self.started += 1
        book = self.folder / f"book-{self.started}"
        process = await asyncio.create_subprocess_exec(
            sys.executable, str(WORKER), *self.args, str(book),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=(self.folder / f"stderr-{self.started}").open("w"),
        )  # fmt: skip
        self.running[process] = book

    async def kill(self, process: asyncio.subprocess.Process) -> None:
        del self.running[process]
        process.send_signal(signal.SIGKILL)
        await process.wait()

    async def stop(self) -> None:
        for process in list(self.running):
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        for process, _ in list(self.running.items()):
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()
        self.running.clear()


async def until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not condition():  # noqa: ASYNC110 - files written by other processes: polled
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"not within {timeout}s: {what}") from None


@pytest.mark.polybus(timeout=600)
async def test_consumer_process_killed_five_times(
    chaos_broker: str, chaos_url: str, size: Callable[..., int], reliability: Reliability, tmp_path: Path
) -> None:
    """A stream of 20,000 messages (scaled) into a group of three consumer processes; the busiest
    one of late is SIGKILLed five times, spread over the stream, and a new process started each
    time. Nothing is lost; duplicates stay within what the killed processes held unacked at the
    broker: their prefetch (plus, on Kafka, what each handled since its last commit)."""
    if chaos_broker == "memory":
        pytest.skip("memory:// lives in one process: another process cannot reach it")
    messages = size(20_000, least=300)
    url = with_options(chaos_url, **LEASES.get(chaos_broker, {}))
    topic = unique_name("chaos-kill")
    ledger = Ledger()
    books = Books(tmp_path, ledger)
    workers = Workers(url, topic, tmp_path, sleep=0.03)
    recent: list[int] = []

    async def kill_five_times(ledger: Ledger) -> None:
        for _ in range(PROCESSES):
            await workers.start()
        for kill in range(1, KILLS + 1):
            target = messages * kill // (KILLS + 2)  # spread over the first 5/7 of the stream
            assert await ledger.wait_deliveries(target, timeout=180), f"not {target} deliveries in 180 s"
            process, book = max(workers.running.items(), key=lambda item: books.recently(item[1]))
            recent.append(books.recently(book))
            await workers.kill(process)
            ledger.fault("kill")
            await workers.start()

    following = asyncio.create_task(books.follow())
    try:
        await run_stream(
            url,
            topic,
            messages=messages,
            consumers=0,
            fault=kill_five_times,
            ledger=ledger,
            send_interval=0.05,
        )
    finally:
        await workers.stop()
        following.cancel()
        await asyncio.gather(following, return_exceptions=True)
    books.read()
    report = ledger.report()
    allowance = sum(recent) if chaos_broker in ACKS_LINGER else 0
    reliability(report, kills=KILLS, prefetch=PREFETCH, allowance=allowance, processes=workers.started)
    assert report.faults == KILLS
    report.check(max_duplicates=PREFETCH * KILLS + allowance)


STORM_PERIOD = 0.2
"""Seconds between two changes of the group: a member joins or one leaves."""


@pytest.mark.polybus(timeout=600)
async def test_rebalance_storm(
    chaos_broker: str, chaos_url: str, size: Callable[..., int], reliability: Reliability
) -> None:
    """Members join and leave the group every 200 ms for 30 s (scaled, at least 3 s) while a producer
    streams; two steady members stay throughout. A leaving member either stops (its handlers finish)
    or is cancelled at once (its deliveries go back unsettled as the consumer closes). Nothing is
    lost, nothing unexpected; duplicates are reported."""
    seconds = max(3.0, 30 * scale())
    messages = size(20_000, least=300)
    url = with_options(chaos_url, **LEASES.get(chaos_broker, {}))
    rng = random.Random(15)
    changes: collections.Counter[str] = collections.Counter()

    async def member(ledger: Ledger, stop: asyncio.Event) -> None:
        async def handler(delivery: polybus.Delivery) -> None:
            ledger.record(delivery)
            await asyncio.sleep(0.005)

        try:
            async with (
                polybus.connect(url) as broker,
                broker.topic(topic).consumer("chaos", prefetch=PREFETCH) as consumer,
            ):
                await polybus.run_consumer(consumer, handler, concurrency=CONCURRENCY, stop=stop)
        except polybus.PolybusError:
            changes["member failed"] += 1

    async def storm(ledger: Ledger) -> None:
        members: list[tuple[asyncio.Task[None], asyncio.Event]] = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            await asyncio.sleep(STORM_PERIOD)
            if len(members) < 2 or (len(members) < 6 and rng.random() < 0.5):
                stop = asyncio.Event()
                members.append((asyncio.create_task(member(ledger, stop)), stop))
                changes["joined"] += 1
            else:
                task, stop = members.pop(rng.randrange(len(members)))
                if rng.random() < 0.5:
                    stop.set()
                    changes["stopped"] += 1
                else:
                    task.cancel()
                    changes["cancelled"] += 1
                ledger.fault("leave")
        for _, stop in members:
            stop.set()
        await asyncio.gather(*(task for task, _ in members), return_exceptions=True)

    topic = unique_name("chaos-storm")
    report = await run_stream(
        url,
        topic,
        messages=messages,
        producers=1,
        consumers=2,
        fault=storm,
        send_interval=seconds / (messages / 50),
    )
    reliability(report, storm_seconds=seconds, **changes)
    assert changes["joined"] >= 3
    report.check()
