"""A half-open connection mid-stream: every connection goes silent without closing (the relay
freezes it) for longer than the client's heartbeat or timeout. The client must notice, drop it
and reconnect by itself, before the freeze ends; no send may hang: each returns or raises a typed
PolybusError within SEND_BOUND. Nothing confirmed is lost, nothing unexpected arrives.

The freeze spares new connections (a NAT or load balancer that lost its old flows): a client that
gave up on a frozen connection gets through at once, so recovery before the thaw proves detection.
The knobs that bound detection are per broker (DETECTION, documented in docs/<broker>.md).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from tests.chaos.conftest import Reliability

import polybus
from polybus.testing import Ledger, RelayFaults, run_stream, unique_name, with_options

DETECTION: dict[str, dict[str, object]] = {
    "rabbitmq": {"heartbeat": 1},  # default 30 s; aiormq gives up after 3 * (heartbeat + 1) s
    "kafka": {"request_timeout_ms": 4000},  # default 30 s (TansuRelayFaults' url has it already)
    "nats": {"ping_interval": 1, "max_outstanding_pings": 2},  # default 10 s, 2
    "redis": {"socket_timeout": 2},  # default 10 s
    # default 30 s, 5 s; and a receive whose reply the freeze held hides its messages until
    # their visibility timeout ends (30 s by default): 5 s keeps the scenario short
    "sqs": {"read_timeout": 3, "connect_timeout": 2, "visibility_timeout": 5},
}
"""Options that make each client notice a silent connection within a few seconds."""
FREEZE = 12.0
"""Seconds the connections stay frozen: longer than every client's detection time above."""
SEND_BOUND = 45.0
"""Longest a send may take, fault or not: the reconnect policy's give_up_after (30 s) plus one
request timeout. A send that takes longer counts as a hang and fails the test."""
SPAN = 18.0
"""Seconds the producers spread their sends over (the freeze starts after 2 s)."""


class TimedLedger(Ledger):
    """A Ledger that bounds and times every send, and notes which sends started during the fault."""

    def __init__(self) -> None:
        super().__init__()
        self.longest_send = 0.0
        self.frozen_at: float | None = None
        self.after_freeze: set[str] = set()
        self.resumed_at: float | None = None

    async def send(self, producer: polybus.Producer, messages: list[polybus.Message]) -> bool:
        if self.frozen_at is not None:
            self.after_freeze.update(m.id for m in messages)
        started = time.monotonic()
        try:
            async with asyncio.timeout(SEND_BOUND):
                return await super().send(producer, messages)
        except TimeoutError:
            raise AssertionError(f"a send hung: neither returned nor raised within {SEND_BOUND}s") from None
        finally:
            self.longest_send = max(self.longest_send, time.monotonic() - started)

    async def on_delivery(self, delivery: polybus.Delivery) -> None:
        if self.resumed_at is None and delivery.id in self.after_freeze:
            self.resumed_at = time.monotonic()


@pytest.mark.polybus(timeout=300)
async def test_half_open_connection_is_detected(
    chaos_broker: str, chaos_faults: RelayFaults, size: Callable[..., int], reliability: Reliability
) -> None:
    messages = size(20_000, least=500)
    producers, batch = 4, 10
    batches = -(-messages // producers // batch)
    ledger = TimedLedger()
    detected: list[float] = []

    async def freeze_then_thaw(ledger_: Ledger) -> None:
        await asyncio.sleep(2.0)
        before = faults.relay.accepted
        ledger.fault("freeze")
        ledger.frozen_at = started = time.monotonic()
        await faults.freeze()
        try:
            while time.monotonic() - started < FREEZE:
                if not detected and faults.relay.accepted > before:
                    detected.append(time.monotonic() - started)  # a client gave up and reconnected
                await asyncio.sleep(0.05)
        finally:
            await faults.thaw()

    async with chaos_faults as faults:
        url = with_options(faults.url, **DETECTION.get(chaos_broker, {}))
        report = await run_stream(
            url,
            unique_name("chaos-half-open"),
            messages=messages,
            producers=producers,
            batch=batch,
            send_interval=SPAN / batches,
            fault=freeze_then_thaw,
            ledger=ledger,
            handler=ledger.on_delivery,
        )
    assert ledger.frozen_at is not None
    resumed = None if ledger.resumed_at is None else round(ledger.resumed_at - ledger.frozen_at, 2)
    figures = {
        "detection": round(detected[0], 2) if detected else None,
        "resumed": resumed,
        "longest_send": round(ledger.longest_send, 2),
    }
    reliability(report, **figures)
    assert report.faults == 1
    report.check()
    assert detected, f"no client reconnected during a {FREEZE}s freeze"
    assert resumed is not None and resumed < FREEZE, f"the stream resumed only after the thaw ({resumed})"
