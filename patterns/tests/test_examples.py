"""Every example in examples/ runs on memory:// and on the five real brokers, changing only the URL.

Each example is run as its user would run it: ``python examples/NN_name.py`` in a subprocess with
``POLYBUS_URL`` set. It must exit 0 and end with a line starting ``OK`` (it checks its own result
and prints that line only when the result is right).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("[0-9][0-9]_*.py"))
TIMEOUT = 120.0
"""Seconds an example may take at most before it counts as hung (a bound, not a timing check)."""


def run_example(example: Path, url: str, *args: str, cwd: Path | None = None) -> str:
    """Run ``example`` on ``url``; return its output, failing the test unless it ended with ``OK``."""
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, str(example), *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env={**os.environ, "POLYBUS_URL": url},
        cwd=cwd,
    )
    took = time.monotonic() - started
    assert result.returncode == 0, f"{example.name} exited {result.returncode}:\n{result.stderr[-3000:]}"
    lines = result.stdout.strip().splitlines()
    assert lines and lines[-1].startswith("OK"), f"{example.name} printed:\n{result.stdout[-2000:]}"
    print(f"{example.name}: {took:.1f}s", end=" ")
    return result.stdout


def test_the_examples_are_found() -> None:
    assert len(EXAMPLES) >= 10, [p.name for p in EXAMPLES]


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name[:2])
def test_example_runs_on_every_broker(example: Path, service_url: str) -> None:
    run_example(example, service_url)
