"""SIGTERM to a ``polybus run`` worker with handlers in flight: nothing acked that did not finish,
nothing lost.

Worker A (``python -m polybus run consumer_service.py:app``, concurrency 8, grace period 0.5 s)
handles messages whose handler sleeps 0.2 to 1.5 s and books each start and each finish (the
finish just before returning: only then may the runner ack). Once a quarter is finished, A gets
SIGTERM: what finishes within the grace period is acked, the rest is cancelled. A second worker B
then handles the rest. Checked: A exits 0; every message A started but did not finish comes back
to B (not acked by A); no message A finished comes back (its ack was sent before A exited); every
confirmed message finishes (lost = confirmed, never finished).

On Kafka an ack is a commit of a partition's contiguous settled prefix: the messages A finished
after a cut-off one of the same partition cannot be committed, and come back to B as well (they
are counted as ``redone``, and as duplicates).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

import pytest
from tests.chaos.conftest import Reliability
from tests.chaos.test_consumers import COMMITS_OFFSETS, until

import polybus
from polybus.testing import Ledger, unique_name

SERVICE = Path(__file__).with_name("consumer_service.py")
CONCURRENCY = 8
PREFETCH = 16
GRACE = 0.5


def books(folder: Path, kind: str, pid: int | None = None) -> list[tuple[str, int]]:
    """The ``(id, attempt)`` lines of the ``kind`` files (of one process, if ``pid``)."""
    found = []
    for path in folder.glob(f"{kind}-{pid if pid is not None else '*'}"):
        for line in path.read_text().splitlines():
            message_id, attempt = line.split()
            found.append((message_id, int(attempt)))
    return found


def log_file(folder: Path) -> TextIO:
    return (folder / f"stderr-{len(list(folder.glob('stderr-*')))}").open("w")


def logs(folder: Path) -> str:
    return "\n".join(path.read_text() for path in sorted(folder.glob("stderr-*")))


async def start_worker(url: str, physical: str, folder: Path, grace: float) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLYBUS_")}
    env |= {
        "RUN_RESULTS": str(folder),
        "POLYBUS_URL": url,
        "POLYBUS_TOPICS": json.dumps({"jobs": physical}),
        "POLYBUS_GRACE_PERIOD": str(grace),
        "POLYBUS_SUBSCRIPTIONS__WORK__CONCURRENCY": str(CONCURRENCY),
        "POLYBUS_SUBSCRIPTIONS__WORK__PREFETCH": str(PREFETCH),
    }
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "polybus", "run", f"{SERVICE}:app",
        env=env, cwd=folder, stdin=asyncio.subprocess.DEVNULL,
        stderr=log_file(folder),
    )  # fmt: skip


async def stop(process: asyncio.subprocess.Process, folder: Path) -> None:
    """SIGTERM (once: a second one exits at once, with 130) and wait for exit code 0."""
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    try:
        code = await asyncio.wait_for(process.wait(), 60)
    except TimeoutError:
        process.kill()
        raise AssertionError("a worker did not exit within 60 s of SIGTERM") from None
    assert code == 0, logs(folder)


@pytest.mark.polybus(timeout=300)
async def test_sigterm_to_polybus_run_worker(
    chaos_broker: str, chaos_url: str, size: Callable[..., int], reliability: Reliability, tmp_path: Path
) -> None:
    if chaos_broker == "memory":
        pytest.skip("memory:// lives in one process: a `polybus run` process cannot reach it")
    messages = size(400, least=40)
    rng = random.Random(15)
    ledger = Ledger()  # deliveries, booked as the handler starts
    physical = unique_name("chaos-sigterm")
    async with polybus.connect(chaos_url) as broker:
        topic = broker.topic(physical)
        async with topic.consumer("workers", prefetch=1):
            pass  # the service's group exists before the first send
        async with topic.producer() as producer:
            bodies = [f"{rng.uniform(0.2, 1.5):.2f}".encode() for _ in range(messages)]
            assert await ledger.send(producer, [polybus.Message(body) for body in bodies])
        first = await start_worker(chaos_url, physical, tmp_path, GRACE)
        second = None
        try:
            await until(lambda: len(books(tmp_path, "finished")) >= messages // 4, 120, "a quarter finished")
            ledger.fault("SIGTERM")
            await stop(first, tmp_path)
            started_a = {i for i, _ in books(tmp_path, "started", first.pid)}
            finished_a = {i for i, _ in books(tmp_path, "finished", first.pid)}
            cut_off = started_a - finished_a

            second = await start_worker(chaos_url, physical, tmp_path, 30)
            everything = ledger.sent_ids
            await until(
                lambda: {i for i, _ in books(tmp_path, "finished")} >= everything,
                180,
                "every message finished",
            )
            await stop(second, tmp_path)
        finally:
            for process in (first, second):
                if process is not None and process.returncode is None:
                    process.kill()
                    await process.wait()
            await topic.delete()

    started_b = {i for i, _ in books(tmp_path, "started", second.pid)}
    for pid in (first.pid, second.pid):
        for message_id, attempt in books(tmp_path, "started", pid):
            ledger.delivered(message_id, attempt)
    report = ledger.report()
    finished = {i for i, _ in books(tmp_path, "finished")}
    redone = finished_a & started_b
    reliability(
        report, cut_off=len(cut_off), finished_by_first=len(finished_a), redone=len(redone), grace=GRACE
    )
    assert cut_off, "no handler was in flight past the grace period: the scenario tested nothing"
    assert cut_off <= started_b, (
        f"{len(cut_off - started_b)} cut-off deliveries were acked, never redelivered"
    )
    if chaos_broker not in COMMITS_OFFSETS:  # Kafka: see the module's docstring
        assert not redone, f"{len(redone)} messages finished and acked by the first worker came back"
    assert finished == ledger.sent_ids
    report.check(max_duplicates=len(cut_off) + len(redone))
