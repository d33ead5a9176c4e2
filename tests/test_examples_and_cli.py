"""Every example runs on the memory broker, and the command line behaves."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("[0-9][0-9]_*.py"))


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def test_there_are_examples() -> None:
    assert len(EXAMPLES) >= 5


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_example_runs_on_memory(example: Path) -> None:
    result = run(str(example), env={"POLYBUS_URL": "memory://"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip(), "the example printed nothing"


def test_demo_shows_fan_out_and_a_redelivery() -> None:
    result = run("-m", "polybus._cli", "demo")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "order #3: card declined (attempt 1)" in out
    assert "order #3: charged 99.90 to alan (attempt 2)" in out
    assert out.count("confirmation sent") == 5
    assert "OK" in out.splitlines()[-1]


def test_cli_errors_are_clear_and_hide_passwords() -> None:
    result = run("-m", "polybus._cli", "demo", "--url", "carrierpigeon://user:Canary-77@host:9092")
    assert result.returncode == 2
    assert "no polybus adapter for carrierpigeon://" in result.stderr
    assert "Canary-77" not in result.stderr + result.stdout


def test_capabilities_command() -> None:
    result = run("-m", "polybus._cli", "capabilities", "--url", "memory://")
    assert result.returncode == 0
    assert "delayed_nack" in result.stdout
