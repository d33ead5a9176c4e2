"""The plugin's terminal output in one process and under pytest-xdist (what ``python3 dev.py test``
runs): notes beside a result, the brokers each worker used, a missing broker failing under CI."""

from __future__ import annotations

import os

import pytest

from polybus.testing import _provision_local
from polybus.testing.plugin import _broker_of

NOTES = """
import pytest
from polybus.testing.plugin import note

@pytest.mark.parametrize("n", [1, 2, 3])
def test_notes(request, n):
    note(request.node, f"note {n} of a test")
"""

NEEDS_REDIS = """
from polybus.testing.plugin import broker_url

def test_needs_redis():
    broker_url("redis")
"""


@pytest.fixture
def dead_redis_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("POLYBUS_") or key == "CI":
            monkeypatch.delenv(key)
    monkeypatch.setenv("POLYBUS_REDIS_URL", f"redis://127.0.0.1:{_provision_local.free_port()}/0")
    monkeypatch.setenv("POLYBUS_PROVISION", "env")  # nothing else is tried: the outcome is certain


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["one-process", "xdist"])
def test_notes_reach_the_terminal(pytester: pytest.Pytester, workers: list[str]) -> None:
    pytester.makepyfile(test_notes=NOTES)
    result = pytester.runpytest_subprocess("-p", "polybus.testing.plugin", *workers)
    result.assert_outcomes(passed=3)
    for n in (1, 2, 3):
        result.stdout.fnmatch_lines([f"*[[]note {n} of a test[]]*"])


def test_workers_report_their_time_and_a_missing_broker_still_fails_under_ci(
    pytester: pytest.Pytester, dead_redis_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CI", "1")
    pytester.makepyfile(test_needs=NEEDS_REDIS, test_notes=NOTES)
    result = pytester.runpytest_subprocess("-p", "polybus.testing.plugin", "-n", "2")
    result.assert_outcomes(failed=1, passed=3)
    assert result.ret != 0
    result.stdout.fnmatch_lines(
        [
            "*polybus brokers*",
            "redis: unavailable (REQUIRED, tests failed)*",
            "pytest-xdist workers' wall time: gw0 *s, gw1 *s",
            "test time by broker (tests), summed over the workers: other *s (4)",
        ]
    )


@pytest.mark.parametrize(
    ("nodeid", "broker"),
    [
        ("adapters/kafka/tests/test_contract.py::TestContract::test_x", "kafka"),
        ("patterns/tests/test_idempotency.py::test_x[sqs-redis]", "sqs"),
        ("patterns/tests/test_examples.py::test_x[nats-09]", "nats"),
        ("tests/chaos/test_cuts.py::test_x[memory]", "memory"),
        ("tests/test_message.py::test_x[a-b]", "other"),
    ],
)
def test_the_broker_of_a_test_comes_from_its_path_or_its_parameters(nodeid: str, broker: str) -> None:
    assert _broker_of(nodeid) == broker
