"""Fixtures of the patterns' tests: every test body runs on memory:// and on the five real brokers.

``service_url`` is parametrised over the brokers (ids ``memory``, ``redis``, ``rabbitmq``, ``kafka``,
``nats``, ``sqs``); a real broker is found or started on demand, and skipped when none can be had
(failed under ``CI``). ``scaled(n)`` is the volume of a case on that broker: SQS runs on moto, a
Python emulator, at a fraction of the others' rate, so its volumes are scaled down (printed).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from polybus.testing.plugin import broker_url, note

BROKERS = ["memory", "redis", "rabbitmq", "kafka", "nats", "sqs"]

SCALE = {"sqs": 0.1}
"""Fraction of each volume a broker runs; the rest run it whole."""


@pytest.fixture(params=BROKERS, scope="session")
def service_broker(request: pytest.FixtureRequest) -> str:
    """The name of the broker a test runs on (one of :data:`BROKERS`)."""
    name: str = request.param
    return name


@pytest.fixture(scope="session")
def service_url(service_broker: str) -> str:
    """The URL of the broker a test runs on: ``memory://`` or a real broker, found or started."""
    if service_broker == "memory":
        return "memory://"
    only = os.environ.get("POLYBUS_PATTERNS_BROKERS")  # e.g. "memory,redis" while working on one
    if only and service_broker not in only.split(","):
        pytest.skip(f"{service_broker} not in POLYBUS_PATTERNS_BROKERS={only}")
    return broker_url(service_broker)


@pytest.fixture
def scaled(service_broker: str, request: pytest.FixtureRequest) -> Callable[[int], int]:
    """``scaled(n)``: ``n`` messages, scaled down on slow brokers (the scale is printed)."""
    scale = SCALE.get(service_broker, 1.0)

    def scale_it(n: int) -> int:
        count = max(1, int(n * scale))
        if count != n:
            note(request.node, f"{service_broker}: {n} scaled to {count}")
        return count

    return scale_it
