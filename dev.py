#!/usr/bin/env python3
"""Developer entry point: ``python3 dev.py demo`` and ``python3 dev.py test``.

Needs only Python 3.11+. It finds ``uv`` (on PATH, or installs it into ``.tools/``), then lets uv
install everything else (the workspace, the dev tools, and the brokers the test harness starts).

    python3 dev.py demo [--url URL]   run the order-processing demo (memory:// by default)
    python3 dev.py test [PYTEST ARGS] ruff + mypy + the whole test suite (every broker: CI=1)
    python3 dev.py uv ARGS...         any uv command, with the bootstrapped uv

The test suite runs in POLYBUS_TEST_WORKERS (default 4) pytest-xdist worker processes: most of its
time is spent waiting on brokers (rebalances, timeouts, redeliveries), not on the CPU. Each worker
finds or starts its own brokers. POLYBUS_TEST_WORKERS=0, or your own -n, or -p no:xdist, overrides it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
TOOLS = ROOT / ".tools"
WORKERS = 4


def uv() -> str:
    found = shutil.which("uv")
    if found:
        return found
    local = TOOLS / ("Scripts/uv.exe" if os.name == "nt" else "bin/uv")
    if not local.exists():
        print("dev.py: installing uv into .tools/ ...", flush=True)
        venv.create(TOOLS, with_pip=True)
        python = TOOLS / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "uv>=0.5"], check=True)
    return str(local)


def run(*args: str) -> int:
    print("+", " ".join(args), flush=True)
    return subprocess.run(args, cwd=ROOT).returncode


def parallel(pytest_args: list[str]) -> list[str]:
    """pytest-xdist options for the test run, unless the caller chose their own."""
    if any(arg.startswith(("-n", "--numprocesses")) or arg.endswith("no:xdist") for arg in pytest_args):
        return []
    workers = ["-n", os.environ.get("POLYBUS_TEST_WORKERS", "").strip() or str(WORKERS)]
    if any(arg.startswith("--dist") for arg in pytest_args):
        return workers
    # worksteal: a worker that runs out takes half of a busy one's queue (test times vary 1000-fold)
    return [*workers, "--dist", "worksteal"]


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"demo", "test", "uv"}:
        print(__doc__)
        return 2
    command, rest = argv[0], argv[1:]
    tool = uv()
    if command == "uv":
        return run(tool, *rest)
    if command == "demo":
        return run(tool, "run", "--all-packages", "polybus", "demo", *rest)
    steps = [
        (tool, "sync", "--all-packages"),
        (tool, "run", "--all-packages", "ruff", "check", "."),
        (tool, "run", "--all-packages", "ruff", "format", "--check", "."),
        (tool, "run", "--all-packages", "mypy"),
        (tool, "run", "--all-packages", "pytest", *parallel(rest), *rest),
    ]
    for step in steps:
        code = run(*step)
        if code != 0:
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
