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

import polybus

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("[0-9][0-9]_*.py"))
TIMEOUT = 120.0
"""Seconds an example may take at most before it counts as hung (a bound, not a timing check)."""


def run_example(example: Path, url: str | None, *args: str) -> str:
    """Run ``example`` on ``url`` (``None``: no POLYBUS_URL); return its output, failing the test
    unless it exited 0 and ended with an ``OK`` line."""
    started = time.monotonic()
    env = {name: value for name, value in os.environ.items() if name != "POLYBUS_URL"}
    result = subprocess.run(
        [sys.executable, str(example), *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=env if url is None else {**env, "POLYBUS_URL": url},
    )
    took = time.monotonic() - started
    assert result.returncode == 0, f"{example.name} exited {result.returncode}:\n{result.stderr[-3000:]}"
    lines = result.stdout.strip().splitlines()
    assert lines and lines[-1].startswith("OK"), f"{example.name} printed:\n{result.stdout[-2000:]}"
    print(f"{example.name}: {took:.1f}s", end=" ")
    return result.stdout


def test_the_examples_are_found() -> None:
    assert len(EXAMPLES) >= 10, [p.name for p in EXAMPLES]


NEEDS = {"09_ordered_competing_consumers.py": "ordering_per_key"}
"""Examples that need a capability; where the broker lacks it they must say so and exit non-zero."""


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name[:2])
def test_example_runs_on_every_broker(example: Path, service_url: str) -> None:
    need = NEEDS.get(example.name)
    if need and getattr(polybus.connect(service_url).capabilities, need) is polybus.Support.UNSUPPORTED:
        result = subprocess.run(
            [sys.executable, str(example), "--url", service_url],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
        assert result.returncode == 1 and need in result.stderr, result.stderr[-2000:]
        return
    run_example(example, service_url)


SAME_SERVICE = ROOT / "examples" / "10_same_service_any_broker.py"


def test_the_same_service_moves_broker_by_its_toml_file_alone(service_url: str, tmp_path: Path) -> None:
    config = (SAME_SERVICE.parent / "any_broker" / "polybus.toml").read_text()
    assert config.count('url = "memory://"') == 1
    (tmp_path / "polybus.toml").write_text(config.replace('url = "memory://"', f"url = {service_url!r}"))
    scheme = service_url.split("://")[0]
    out = run_example(SAME_SERVICE, None, "--config", str(tmp_path / "polybus.toml"))
    assert f"on {scheme}:// via 'dev-signups'" in out.splitlines()[-1]


def test_a_typo_in_the_services_toml_file_is_named_with_its_line(tmp_path: Path) -> None:
    config = (SAME_SERVICE.parent / "any_broker" / "polybus.toml").read_text()
    (tmp_path / "polybus.toml").write_text(config.replace("concurrency = 4", "concurency = 4"))
    result = subprocess.run(
        [sys.executable, str(SAME_SERVICE), "--config", str(tmp_path / "polybus.toml")],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    line = config.splitlines().index("concurrency = 4") + 1
    assert result.returncode != 0
    assert f"polybus.toml:{line}" in result.stderr and "concurency" in result.stderr, result.stderr[-2000:]
