"""The broker process killed (SIGKILL) and restarted mid-stream, on a private durable broker
(:class:`polybus.testing.BrokerProcess`): every confirmed message is delivered, nothing unexpected."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import pytest
from tests.chaos.conftest import Reliability

from polybus.testing import BrokerProcess, Ledger, NotStartable, run_stream, unique_name
from polybus.testing.provision import required

BATCH = 50
STREAM_SECONDS = 8.0
"""How long the producers' nominal sending lasts (outages add to it), so that the kills land mid-stream."""
FIRST_KILL_AFTER = 2.0
"""Seconds into the stream before the first kill (a broker's queues settled)."""


async def enter_or_skip(stack: contextlib.AsyncExitStack, process: BrokerProcess) -> None:
    """Start ``process`` in ``stack``; skip when its program is missing here (fail under CI)."""
    try:
        await stack.enter_async_context(process)
    except NotStartable as exc:
        if required(process.kind):  # under CI every broker must run
            raise
        pytest.skip(f"no private {process.kind} broker here: {exc}")


@pytest.mark.polybus(timeout=600)
async def test_broker_killed_and_restarted_three_times(
    chaos_broker: str, size: Callable[..., int], reliability: Reliability
) -> None:
    reason = BrokerProcess.unsupported(chaos_broker)
    if reason:
        pytest.skip(reason)
    messages = size(20_000, least=1000)
    producers = 4
    batches = -(-messages // (producers * BATCH))
    restarts: list[float] = []

    async def kill_three_times(ledger: Ledger) -> None:
        # RabbitMQ 3.10 may leave a quorum queue without a leader when killed within about a second
        # of declaring it (docs/rabbitmq.md): the first kill comes a few seconds into the stream
        await asyncio.sleep(FIRST_KILL_AFTER)
        for k in (1, 2, 3):  # at a quarter, half and three quarters of the stream
            await ledger.wait_deliveries(messages * k // 4, timeout=120)
            ledger.fault("kill")
            await broker.kill()
            started = time.monotonic()
            await broker.start()
            restarts.append(time.monotonic() - started)

    broker = BrokerProcess(chaos_broker)
    async with contextlib.AsyncExitStack() as stack:
        await enter_or_skip(stack, broker)
        report = await run_stream(
            broker.url,
            unique_name("chaos-restart"),
            messages=messages,
            producers=producers,
            batch=BATCH,
            fault=kill_three_times,
            send_interval=STREAM_SECONDS / batches,
        )
    reliability(report, restarts=3, restart_seconds=round(max(restarts), 1))
    assert broker.kills == 3, broker
    assert report.faults == 3
    report.check()
