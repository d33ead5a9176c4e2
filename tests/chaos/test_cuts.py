"""Connections cut mid-stream: every confirmed message is delivered, nothing unexpected arrives."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from tests.chaos.conftest import Reliability

from polybus.testing import Ledger, RelayFaults, unique_name


@pytest.mark.polybus(timeout=600)
async def test_connection_cut_five_times(
    chaos_broker: str, chaos_url: str, size: Callable[..., int], reliability: Reliability
) -> None:
    if chaos_broker in ("memory", "kafka"):
        pytest.skip("todo")
    faults = RelayFaults.in_front_of(chaos_url)
    assert faults is not None
    messages = size(20_000, least=500)

    async def cut_five_times(ledger: Ledger) -> None:
        for n in range(1, 6):  # spread over the stream: after each sixth of it
            await ledger.wait_deliveries(n * messages // 6, timeout=60)
            ledger.fault("cut")
            await faults.cut()

    async with faults:
        report = await faults_stream(faults.url, messages, cut_five_times)
    reliability(report)
    assert report.faults == 5
    report.check()


async def faults_stream(url: str, messages: int, fault) -> object:
    from polybus.testing import run_stream

    return await run_stream(url, unique_name("chaos-cut"), messages=messages, fault=fault, send_interval=0.02)
