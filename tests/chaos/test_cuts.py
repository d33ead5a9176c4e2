"""Connections cut mid-stream: every confirmed message is delivered, nothing unexpected arrives."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from tests.chaos.conftest import Reliability

from polybus.testing import Ledger, RelayFaults, run_stream, unique_name, with_options

SPAN = 4.0
"""Seconds the producers spread their sends over: the five cuts (one every 0.4 s) fall inside."""
LEASE = {"sqs": {"visibility_timeout": 5}, "nats": {"ack_wait": 5}}
"""SQS hides the messages of a receive whose reply a cut lost until their visibility timeout ends,
JetStream redelivers what it sent to a pull request a cut lost after ``ack_wait`` (30 s by
default both): a shorter lease keeps the scenario short (the consumers keep what they hold
alive). The other brokers notice the lost connection and hand its deliveries back at once."""


@pytest.mark.polybus(timeout=600)
async def test_connection_cut_five_times(
    chaos_broker: str, chaos_faults: RelayFaults, size: Callable[..., int], reliability: Reliability
) -> None:
    messages = size(20_000, least=500)
    producers, batch = 4, 10
    batches = -(-messages // producers // batch)
    sent_at_last_cut: list[int] = []

    async def cut_five_times(ledger: Ledger) -> None:
        for n in range(1, 6):  # spread over the stream: after each sixth of it was confirmed
            await ledger.wait_sent(n * messages // 6, timeout=60)
            ledger.fault("cut")
            await faults.cut()
        sent_at_last_cut.append(len(ledger.sent_ids))

    async with chaos_faults as faults:
        report = await run_stream(
            with_options(faults.url, **LEASE.get(chaos_broker, {})),
            unique_name("chaos-cut"),
            messages=messages,
            producers=producers,
            batch=batch,
            send_interval=SPAN / batches,
            fault=cut_five_times,
        )
    reliability(report)
    assert report.faults == 5
    assert sent_at_last_cut[0] < messages, "the stream ended before the last cut: spread it wider"
    report.check()
