"""At-least-once across a real crash: a consumer process killed with SIGKILL loses nothing."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import polybus
from polybus.testing import unique_name

CHILD = Path(__file__).with_name("_child_consumer.py")


async def _read_until(proc: asyncio.subprocess.Process, word: str, timeout: float) -> list[str]:
    assert proc.stdout is not None
    lines: list[str] = []
    async with asyncio.timeout(timeout):
        while True:
            raw = await proc.stdout.readline()
            if not raw:
                raise AssertionError(f"child exited before {word}: {lines}")
            line = raw.decode().strip()
            lines.append(line)
            if line == word:
                return lines


async def test_sigkilled_consumer_gets_everything_unacked_redelivered(polybus_url: str) -> None:
    n, ack, hold = 40, 10, 5
    async with polybus.connect(polybus_url, partitions=1) as broker:
        topic = broker.topic(unique_name("killed"))
        group = unique_name("g")
        async with topic.consumer(group):
            pass  # the group exists before anything is sent
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(CHILD),
            polybus_url,
            topic.name,
            group,
            str(ack),
            str(hold),
            stdout=asyncio.subprocess.PIPE,
            env=env,
        )
        try:
            await _read_until(proc, "JOINED", 60)
            async with topic.producer() as producer:
                await producer.send_many([str(i) for i in range(n)])
            lines = await _read_until(proc, "READY", 60)
        finally:
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
        acked = [line.split()[1] for line in lines if line.startswith("ACKED")]
        assert acked == [str(i) for i in range(ack)]
        async with topic.consumer(group) as survivor:
            back = []
            first = await survivor.receive(timeout=60)  # after the dead member's session timed out
            assert first is not None
            back.append(first.text())
            await first.ack()
            while (d := await survivor.receive(timeout=2.0)) is not None:
                back.append(d.text())
                await d.ack()
    # everything the dead process did not ack comes back, in order, and what it acked does not
    assert back == [str(i) for i in range(ack, n)]
