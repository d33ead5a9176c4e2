"""``polybus run`` as processes: graceful shutdown, a worker SIGKILLed under ``--processes 3``, and
order per key across ``--processes 2``.

These start real ``python -m polybus run`` processes (run_service.py is the service), so they run on
the five real brokers only: ``memory://`` lives inside one process and cannot be shared with
another (the memory case is skipped; tests/test_run_cli.py covers the graceful stop on memory in
one process). The service is configured through the environment only: ``POLYBUS_URL``, the
logical topic ``jobs`` mapped to a fresh physical name by ``POLYBUS_TOPICS``, and the subscription's
concurrency and prefetch set by ``POLYBUS_SUBSCRIPTIONS__WORK__*``, or the same through a
``polybus.toml`` in the working directory (the ``--processes 3`` case). Each process test is small:
starting a process costs about a second.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

import polybus
from polybus.testing import unique_name
from polybus.testing._urls import with_options

SERVICE = Path(__file__).with_name("run_service.py")

LEASES: dict[str, dict[str, object]] = {
    "redis": {"visibility_timeout": 2, "claim_interval": 0.25},
    "nats": {"ack_wait": 2},
    "sqs": {"visibility_timeout": 10},  # moto, loaded by three workers, is slow to take a delete
}
"""URL options that make a dead worker's deliveries come back within seconds rather than 30 s
(RabbitMQ requeues when the connection drops; a Kafka member's partitions move after its session)."""


def real_broker(service_broker: str) -> None:
    if service_broker == "memory":
        pytest.skip("memory:// lives in one process: process tests need a broker other processes reach")


def lines(folder: Path, kind: str) -> list[str]:
    """Every whole line of the ``kind-<pid>`` files in ``folder`` (a SIGKILL may cut the last one)."""
    found = []
    for path in folder.glob(f"{kind}-*"):
        text = path.read_text()
        found += text.splitlines() if text.endswith("\n") else text.splitlines()[:-1]
    return found


def lines_of(folder: Path, kind: str, pid: int) -> list[str]:
    """The whole lines of one process's ``kind`` file."""
    text = (folder / f"{kind}-{pid}").read_text()
    return text.splitlines() if text.endswith("\n") else text.splitlines()[:-1]


def pids(folder: Path, kind: str) -> dict[int, int]:
    """pid -> lines of its ``kind`` file."""
    return {int(p.name.rsplit("-", 1)[1]): len(p.read_text().splitlines()) for p in folder.glob(f"{kind}-*")}


async def until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not condition():  # noqa: ASYNC110 - files written by other processes: polled
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"not within {timeout}s: {what}") from None


STARTED: list[asyncio.subprocess.Process] = []


@pytest.fixture(autouse=True)
def no_process_left() -> Iterator[None]:
    """A failed test leaves no service running: whatever it started is killed, workers first."""
    yield
    while STARTED:
        process = STARTED.pop()
        if process.returncode is None:
            with contextlib.suppress(psutil.Error):
                for child in psutil.Process(process.pid).children(recursive=True):
                    child.kill()
                process.kill()


async def start_service(
    url: str,
    physical: str,
    folder: Path,
    *args: str,
    target: str = "app",
    subscription: str = "work",
    sleep: float = 0.0,
    concurrency: int = 1,
    prefetch: int = 1,
    by_file: bool = False,
) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLYBUS_")}
    env |= {"RUN_RESULTS": str(folder), "RUN_SLEEP": str(sleep)}
    if by_file:  # the same settings through ./polybus.toml, found in the working directory
        (folder / "polybus.toml").write_text(
            f"url = {json.dumps(url)}\n\n[topics]\njobs = {json.dumps(physical)}\n\n"
            f"[subscriptions.{subscription}]\nconcurrency = {concurrency}\nprefetch = {prefetch}\n"
        )
    else:
        env |= {
            "POLYBUS_URL": url,
            "POLYBUS_TOPICS": json.dumps({"jobs": physical}),
            f"POLYBUS_SUBSCRIPTIONS__{subscription.upper()}__CONCURRENCY": str(concurrency),
            f"POLYBUS_SUBSCRIPTIONS__{subscription.upper()}__PREFETCH": str(prefetch),
        }
    stderr = (folder / "stderr.log").open("w")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "polybus", "run", f"{SERVICE}:{target}", *args,
        env=env, cwd=folder, stdin=asyncio.subprocess.DEVNULL, stderr=stderr,
    )  # fmt: skip
    STARTED.append(process)
    return process


async def make_group(broker: polybus.Broker, physical: str) -> polybus.Topic:
    """The topic, with the service's group created before anything is sent."""
    topic = broker.topic(physical)
    async with topic.consumer("workers"):
        pass
    return topic


async def bodies_before_sentinel(topic: polybus.Topic) -> list[str]:
    """What a fresh member of the group receives up to a sentinel sent once it is in (plus 1 s)."""
    seen: list[str] = []
    async with topic.consumer("workers") as fresh, topic.producer() as producer:
        await fresh.receive(timeout=0.5)  # joined (a partitioned broker assigns on the first fetch)
        await producer.send(b"sentinel")
        async with asyncio.timeout(60):
            while True:
                delivery = await fresh.receive(timeout=1)
                if delivery is not None:
                    await delivery.ack()
                    if delivery.body == b"sentinel":
                        break
                    seen.append(delivery.body.decode())
        while (delivery := await fresh.receive(timeout=1)) is not None:
            await delivery.ack()
            seen.append(delivery.body.decode())
    return seen


@pytest.mark.polybus(timeout=240)
async def test_sigterm_acks_what_finishes_in_the_grace_period_and_hands_back_what_is_cut_off(
    service_broker: str, service_url: str, tmp_path: Path
) -> None:
    """8 handlers of 2 s in flight get SIGTERM. Grace 20 s: all 8 finish and are acked, exit 0 well
    within the grace period, and a fresh member of the group receives none of them. Grace 1 s: none
    finishes, exit 0, and all 8 go to a fresh member. Both services run at once (time)."""
    real_broker(service_broker)
    runs: dict[str, tuple[polybus.Topic, Path, asyncio.subprocess.Process]] = {}
    async with polybus.connect(service_url) as broker:
        for name, grace in (("finish", "20"), ("cut", "1")):
            physical, folder = unique_name(f"run-{name}"), tmp_path / name
            folder.mkdir()
            topic = await make_group(broker, physical)
            async with topic.producer() as producer:
                await producer.send_many([f"{name}-{i}".encode() for i in range(8)])
            process = await start_service(
                service_url, physical, folder, "--grace-period", grace, sleep=2, concurrency=8, prefetch=8
            )
            runs[name] = (topic, folder, process)
        in_flight = [folder for _, folder, _ in runs.values()]
        await until(lambda: all(len(lines(f, "started")) == 8 for f in in_flight), 90, "8 in flight")
        signalled = time.monotonic()
        for _, _, process in runs.values():
            process.send_signal(signal.SIGTERM)
        (finish_topic, finish_dir, finisher), (cut_topic, cut_dir, cutter) = runs["finish"], runs["cut"]

        assert await asyncio.wait_for(cutter.wait(), 30) == 0, (cut_dir / "stderr.log").read_text()
        cut_after = time.monotonic() - signalled
        assert lines(cut_dir, "done") == []
        assert await asyncio.wait_for(finisher.wait(), 30) == 0, (finish_dir / "stderr.log").read_text()
        finish_after = time.monotonic() - signalled
        assert sorted(lines(finish_dir, "done")) == sorted(f"finish-{i}" for i in range(8))
        assert finish_after < 20
        assert "grace period of 1.0s is over" in (cut_dir / "stderr.log").read_text()

        assert await bodies_before_sentinel(finish_topic) == []  # all 8 were acked
        redelivered: list[str] = []
        async with cut_topic.consumer("workers") as fresh:
            async with asyncio.timeout(60):
                while len(redelivered) < 8:
                    delivery = await fresh.receive(timeout=1)
                    if delivery is not None:
                        await delivery.ack()
                        redelivered.append(delivery.body.decode())
        assert sorted(redelivered) == sorted(f"cut-{i}" for i in range(8))
    print(f"\n[{service_broker}: stopped after {finish_after:.1f}s (grace 20), {cut_after:.1f}s (grace 1)]")


SLOWER = {"sqs": 5}
"""Further scale-down of this case: moto (SQS) takes a few dozen messages a second here, and
this case would spend minutes on its 2,000; the conftest's scale applies on top."""
PREFETCH = 20
CONCURRENCY = 4
ACK_WINDOW = 0.5
"""Seconds within which a handled message's ack reaches the broker (acks are coalesced: Kafka
commits the settled offsets of each partition every ``commit_interval`` plus a round trip)."""


@pytest.mark.polybus(timeout=400)
async def test_processes_3_restart_a_killed_worker_and_lose_nothing(
    service_broker: str, service_url: str, scaled: Callable[[int], int], tmp_path: Path
) -> None:
    """``--processes 3`` over a stream of 20,000 messages (scaled); one worker is SIGKILLed once a
    third is done; URL, topic name and overrides come from ./polybus.toml. Every message is
    handled (distinct bodies == sent), the supervisor restarts the worker and exits 0 on SIGTERM.
    Duplicates: each message at most twice, and no more than the killed worker's in-flight count
    at the broker: its prefetch (deliveries held unsettled) plus what it handled in its last
    ``ACK_WINDOW`` (acks not yet recorded)."""
    real_broker(service_broker)
    total = scaled(20_000 // SLOWER.get(service_broker, 1))
    url = with_options(service_url, **LEASES.get(service_broker, {}))
    physical = unique_name("run-kill")
    async with polybus.connect(url) as broker:
        topic = await make_group(broker, physical)
        supervisor = await start_service(
            url, physical, tmp_path, "--processes", "3", "--grace-period", "10",
            sleep=0.005, concurrency=CONCURRENCY, prefetch=PREFETCH, by_file=True,
        )  # fmt: skip
        log = tmp_path / "stderr.log"
        started = time.monotonic()
        async with topic.producer() as producer:

            async def publish() -> None:
                for first in range(0, total, 500):
                    await producer.send_many([str(n).encode() for n in range(first, min(first + 500, total))])

            publishing = asyncio.create_task(publish())
            history: collections.deque[tuple[float, dict[int, int]]] = collections.deque()

            def a_third_handled() -> bool:
                history.append((time.monotonic(), pids(tmp_path, "done")))
                while history[0][0] < history[-1][0] - ACK_WINDOW:
                    history.popleft()
                return sum(history[-1][1].values()) >= total // 3

            await until(a_third_handled, 120, "a third handled")
            workers = {p.pid for p in psutil.Process(supervisor.pid).children()}
            then, now = history[0][1], history[-1][1]
            recently = {pid: n - then.get(pid, 0) for pid, n in now.items() if pid in workers}
            victim = max(recently, key=recently.__getitem__)  # the busiest one of late
            os.kill(victim, signal.SIGKILL)
            killed_at = len(lines(tmp_path, "done"))
            await publishing
        await until(lambda: len(set(lines(tmp_path, "done"))) == total, 240, "every message handled")
        elapsed = time.monotonic() - started
        restarted = "was killed by SIGKILL unexpectedly; restarting it in 1.0s"
        await until(lambda: restarted in log.read_text(), 30, "restart logged")
        await until(lambda: log.read_text().count("INFO serving") == 4, 30, "the restarted worker serving")
        supervisor.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(supervisor.wait(), 60) == 0, log.read_text()

    done = lines(tmp_path, "done")
    assert set(done) == {str(n) for n in range(total)}
    copies = collections.Counter(done)
    duplicated = {body for body, n in copies.items() if n > 1}
    bound = PREFETCH + recently[victim]
    others = len(duplicated - set(lines_of(tmp_path, "done", victim)))  # SQS may repeat one anyway
    print(
        f"\n[{service_broker}: {total} messages through 3 workers in {elapsed:.1f}s, worker killed after "
        f"{killed_at}, {len(done) - len(set(done))} duplicates (bound {bound} = prefetch {PREFETCH} + "
        f"{recently[victim]} handled in its last {ACK_WINDOW}s), {others} of them not the killed worker's]"
    )
    assert max(copies.values()) <= 2
    assert len(done) - len(set(done)) <= bound


@pytest.mark.polybus(timeout=300)
async def test_processes_2_keep_order_per_key_where_the_broker_gives_a_key_to_one_member(
    service_broker: str, service_url: str, scaled: Callable[[int], int], tmp_path: Path
) -> None:
    """50 keys x 200 messages (scaled) through ``--processes 2`` with ``ordered_by_key=True`` and
    ``concurrency=16``: per key, handler runs never overlap and run in send order (first runs; a
    redelivery after a rebalance may repeat one), and both processes take part. Only where
    ``key_affinity`` is native (Kafka; SQS with fifo=true): elsewhere two members of a group can hold
    messages of one key at once, and the order across processes is not promised."""
    real_broker(service_broker)
    keys, total = 50, scaled(10_000)
    per_key = total // keys
    physical = unique_name("run-order")
    async with polybus.connect(service_url) as broker:
        if broker.capabilities.key_affinity is not polybus.Support.NATIVE:
            pytest.skip(f"key_affinity is {broker.capabilities.key_affinity.value} on {service_broker}")
        topic = await make_group(broker, physical)
        supervisor = await start_service(
            service_url, physical, tmp_path, "--processes", "2",
            target="ordered", subscription="in_order", concurrency=16, prefetch=64,
        )  # fmt: skip
        async with topic.producer() as producer:
            # warm up until both processes handle messages: the group's members are all in
            async with asyncio.timeout(90):
                while len(pids(tmp_path, "ordered")) < 2:
                    await producer.send_many([polybus.Message(b"warm", key=f"k{k}") for k in range(keys)])
                    await asyncio.sleep(0.5)
            for seq in range(per_key):
                body = str(seq).encode()
                await producer.send_many([polybus.Message(body, key=f"k{k}") for k in range(keys)])

        def runs() -> list[tuple[str, int, int, int, int]]:
            found = []
            for path in tmp_path.glob("ordered-*"):
                pid = int(path.name.rsplit("-", 1)[1])
                for line in lines_of(tmp_path, "ordered", pid):
                    key, body, start, end = line.split()
                    if body != "warm":
                        found.append((key, int(body), int(start), int(end), pid))
            return found

        handled = lambda: len({(key, seq) for key, seq, *_ in runs()})  # noqa: E731
        await until(lambda: handled() == keys * per_key, 180, "every message handled")
        supervisor.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(supervisor.wait(), 60) == 0, (tmp_path / "stderr.log").read_text()

    by_key: dict[str, list[tuple[int, int, int, int]]] = collections.defaultdict(list)
    for key, seq, start, end, pid in runs():
        by_key[key].append((start, end, seq, pid))
    assert len({pid for *_, pid in runs()}) == 2  # both processes took part
    for key, key_runs in by_key.items():
        key_runs.sort()
        for (_, end, _, _), (start, _, _, _) in itertools.pairwise(key_runs):
            assert start >= end, f"two runs of key {key} overlapped"
        first_runs = list(dict.fromkeys(seq for _, _, seq, _ in key_runs))
        assert first_runs == list(range(per_key)), f"key {key} ran out of order"
    print(f"\n[{service_broker}: {keys} keys x {per_key} in order across 2 processes]")
