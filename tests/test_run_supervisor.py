"""The supervisor of ``polybus run --processes N``, driven with tiny stand-in workers (no broker):
restarts with a logged backoff, stop forwarding, exit codes, stragglers killed after the grace period."""

import asyncio
import logging
import sys
from pathlib import Path

import pytest

from polybus import _supervisor
from polybus._supervisor import Supervisor, describe_exit

# A stand-in worker: argv = [dir, number, behaviour]. It marks itself up, then waits for SIGTERM.
WORKER = """
import os, signal, sys, time, pathlib
folder, number, behaviour = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3]
runs = folder / f"runs-{number}"
runs.write_text(runs.read_text() + "x" if runs.exists() else "x")
if behaviour == "crash-once" and len(runs.read_text()) == 1:
    sys.exit(3)
if behaviour == "config-error":
    sys.exit(2)
signal.signal(signal.SIGTERM, signal.SIG_IGN if behaviour == "stubborn" else lambda *_: sys.exit(0))
(folder / f"up-{number}").write_text(str(os.getpid()))
while True:
    time.sleep(0.05)
"""


def stand_in(folder: Path, behaviours: dict[int, str]) -> Supervisor:
    def command(number: int) -> list[str]:
        return [sys.executable, "-c", WORKER, str(folder), str(number), behaviours.get(number, "ok")]

    return Supervisor(command, len(behaviours), grace_period=0.2)


async def until(condition: object, timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():  # type: ignore[operator]  # noqa: ASYNC110 - files of other processes
            await asyncio.sleep(0.02)


def up(folder: Path, *numbers: int) -> bool:
    return all((folder / f"up-{n}").exists() for n in numbers)


async def test_a_worker_that_dies_is_restarted_and_a_stop_ends_all_with_exit_0(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "polybus.supervisor")
    supervisor = stand_in(tmp_path, {1: "ok", 2: "crash-once"})
    running = asyncio.create_task(supervisor.run())
    await until(lambda: up(tmp_path, 1, 2))
    assert (tmp_path / "runs-2").read_text() == "xx"  # crashed once, started again
    assert (tmp_path / "runs-1").read_text() == "x"
    assert supervisor.restarts == 1
    supervisor.stop()
    assert await asyncio.wait_for(running, 10) == 0
    assert "worker 2 (pid" in caplog.text
    assert "exited with code 3 unexpectedly; restarting it in 1.0s" in caplog.text
    assert "all 2 workers stopped" in caplog.text


async def test_a_configuration_error_stops_everything_without_restarts(tmp_path: Path) -> None:
    supervisor = stand_in(tmp_path, {1: "ok", 2: "config-error"})
    assert await asyncio.wait_for(supervisor.run(), 20) == 2
    assert supervisor.restarts == 0
    assert (tmp_path / "runs-2").read_text() == "x"


async def test_a_worker_that_ignores_the_stop_is_killed_after_the_grace_period(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(_supervisor, "KILL_MARGIN", 0.3)
    supervisor = stand_in(tmp_path, {1: "ok", 2: "stubborn"})
    running = asyncio.create_task(supervisor.run())
    await until(lambda: up(tmp_path, 1, 2))
    supervisor.stop()
    assert await asyncio.wait_for(running, 10) == 1
    assert "worker 2 (pid" in caplog.text and "killing it" in caplog.text
    assert "was killed by SIGKILL" in caplog.text


def test_exit_descriptions() -> None:
    assert describe_exit(0) == "exited with code 0"
    assert describe_exit(-9) == "was killed by SIGKILL"
    assert describe_exit(-15) == "was killed by SIGTERM"
