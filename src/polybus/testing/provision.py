"""Broker provisioning for tests, examples and benchmarks (stub: env URL or standard local URL).

Being replaced by the full harness (issue 3): env URL -> standard local port with a protocol
handshake -> a local process the harness starts -> a testcontainers container -> unavailable.
"""

from __future__ import annotations

import dataclasses
import os

__all__ = ["BROKERS", "BrokerUnavailable", "FoundBroker", "acquire", "release_all", "report_lines", "required"]

BROKERS = ("rabbitmq", "kafka", "sqs", "nats", "redis")

_DEFAULT = {
    "rabbitmq": "amqp://guest:guest@127.0.0.1:5672/",
    "redis": "redis://127.0.0.1:6379/0",
    "nats": "nats://127.0.0.1:4222",
    "kafka": "kafka://127.0.0.1:9092",
    "sqs": "sqs://test:test@127.0.0.1:4566?region=us-east-1&tls=false",
}


class BrokerUnavailable(Exception):
    """No broker of that kind could be found or started; the message says what was tried."""


@dataclasses.dataclass
class FoundBroker:
    name: str
    url: str
    source: str
    version: str | None = None


def required(name: str) -> bool:
    """True when a missing broker must fail the run (``CI`` set, or ``POLYBUS_REQUIRE_BROKERS``)."""
    if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
        return True
    wanted = os.environ.get("POLYBUS_REQUIRE_BROKERS", "")
    return wanted.strip() == "all" or name in {w.strip() for w in wanted.split(",")}


def acquire(name: str) -> FoundBroker:
    env = os.environ.get(f"POLYBUS_{name.upper()}_URL")
    if env:
        return FoundBroker(name, env, "env")
    return FoundBroker(name, _DEFAULT[name], "local-port")


def release_all() -> None:
    """Stop every broker process this module started."""


def report_lines() -> list[str]:
    return []
