"""Connections cut mid-stream: every confirmed message is delivered, nothing unexpected arrives."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from tests.chaos.conftest import Reliability

from polybus.testing import Ledger, RelayFaults, run_stream, unique_name


@pytest.mark.polybus(timeout=600)
async def test_connection_cut_five_times(
    chaos_faults: RelayFaults, size: Callable[..., int], reliability: Reliability
) -> None:
    messages = size(20_000, least=500)

    async def cut_five_times(ledger: Ledger) -> None:
        for _ in range(5):
            await asyncio.sleep(0.4)
            ledger.fault("cut")
            await faults.cut()

    async with chaos_faults as faults:
        report = await run_stream(
            faults.url, unique_name("chaos-cut"), messages=messages, fault=cut_five_times, send_interval=0.02
        )
    reliability(report)
    assert report.faults == 5
    report.check()
