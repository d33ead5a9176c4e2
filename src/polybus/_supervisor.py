"""``polybus run --processes N``: a supervisor that keeps N worker processes running one App.

Each worker is ``python -m polybus run ... --processes 1 --worker K``, a process of its own
(competing consumers across processes: the workers share the App's groups). The supervisor:

- forwards the first SIGTERM/SIGINT to every worker (each stops gracefully within its grace
  period) and kills a worker still running ``KILL_MARGIN`` seconds after the grace period;
  a second signal is forwarded too (the workers exit at once) and the supervisor exits 130;
- restarts a worker that exits while no stop was asked for, after a backoff (1 s, doubling up to
  30 s, back to 1 s once a worker has lived 30 s), and logs why; a worker that exits with a
  configuration error (2) is not restarted: the supervisor stops the others and exits 2;
- exits 0 when every worker exited 0 after a stop, else 1 (a worker that the stop signal ended
  before it could handle signals, while still starting, held nothing and counts as 0).

Workers run in their own process group, so a Ctrl-C in the terminal reaches the supervisor only
(and is forwarded once); their stdin is a pipe from the supervisor, so they stop gracefully when
it dies, however it dies. Imports core modules only.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
from collections.abc import Callable, Mapping

from polybus._run import EXIT_CONFIG, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, STOP_SIGNALS

__all__ = ["Supervisor"]

log = logging.getLogger("polybus.supervisor")

RESTART_DELAY = 1.0
MAX_RESTART_DELAY = 30.0
HEALTHY_AFTER = 30.0
"""Seconds a worker must have lived for its next restart to wait ``RESTART_DELAY`` again."""
KILL_MARGIN = 10.0
"""Seconds past the grace period a stopping worker gets before it is killed."""


def describe_exit(code: int) -> str:
    """``exited with code 1`` / ``was killed by SIGKILL``."""
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


class Supervisor:
    """Keeps ``processes`` workers running; ``command(k)`` is worker ``k``'s argv (``k`` from 1)."""

    def __init__(
        self,
        command: Callable[[int], list[str]],
        processes: int,
        *,
        grace_period: float,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.command = command
        self.processes = processes
        self.grace_period = grace_period
        self.env = dict(os.environ if env is None else env)
        self.workers: dict[int, asyncio.subprocess.Process] = {}
        self.restarts = 0
        self._stop = asyncio.Event()
        self._signals = 0
        self._forwarded: set[int] = set()

    async def run(self) -> int:
        """Start the workers and keep them running until a stop; the supervisor's exit code."""
        loop = asyncio.get_running_loop()
        for signum in STOP_SIGNALS:
            loop.add_signal_handler(signum, self._on_signal, signum)
        try:
            codes = await asyncio.gather(*(self._keep(k) for k in range(1, self.processes + 1)))
        finally:
            for signum in STOP_SIGNALS:
                loop.remove_signal_handler(signum)
        if EXIT_CONFIG in codes:
            return EXIT_CONFIG
        if all(code == EXIT_OK for code in codes):
            log.info("all %d workers stopped", self.processes)
            return EXIT_OK
        return EXIT_FAILED

    def stop(self, signum: int = signal.SIGTERM) -> None:
        """Ask every worker to stop gracefully (as on a first SIGTERM)."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._forward(signum)
        asyncio.get_running_loop().call_later(self.grace_period + KILL_MARGIN, self._kill_stragglers)

    def _on_signal(self, signum: int) -> None:
        self._signals += 1
        name = signal.Signals(signum).name
        if self._signals == 1:
            log.info("%s: stopping %d workers (grace period %ss)", name, len(self.workers), self.grace_period)
            self.stop(signum)
            return
        log.warning("second %s: workers exit now", name)
        self._forward(signum)
        for handler in logging.getLogger().handlers:
            handler.flush()
        os._exit(EXIT_INTERRUPTED)

    def _forward(self, signum: int) -> None:
        self._forwarded.add(signum)
        for process in self.workers.values():
            if process.returncode is None:
                try:
                    process.send_signal(signum)
                except ProcessLookupError:
                    pass

    def _kill_stragglers(self) -> None:
        for number, process in self.workers.items():
            if process.returncode is None:
                log.error(
                    "worker %d (pid %d) still running %ss after the grace period: killing it",
                    number,
                    process.pid,
                    KILL_MARGIN,
                )
                process.kill()

    async def _keep(self, number: int) -> int:
        loop = asyncio.get_running_loop()
        delay = RESTART_DELAY
        while True:
            process = await asyncio.create_subprocess_exec(
                *self.command(number), stdin=subprocess.PIPE, env=self.env, process_group=0
            )
            self.workers[number] = process
            if self._stop.is_set():  # stopped while it was starting
                self._forwarded.add(signal.SIGTERM)
                process.send_signal(signal.SIGTERM)
            started = loop.time()
            log.info("worker %d started (pid %d)", number, process.pid)
            code = await process.wait()
            if self._stop.is_set():
                if -code in self._forwarded:  # killed by the stop itself before it could handle it
                    log.info("worker %d (pid %d) stopped before it was serving", number, process.pid)
                    return EXIT_OK
                level = logging.INFO if code == EXIT_OK else logging.WARNING
                log.log(level, "worker %d (pid %d) %s", number, process.pid, describe_exit(code))
                return code
            if code == EXIT_CONFIG:
                log.error(
                    "worker %d (pid %d) exited with a configuration error: stopping", number, process.pid
                )
                self.stop()
                return code
            if loop.time() - started >= HEALTHY_AFTER:
                delay = RESTART_DELAY
            self.restarts += 1
            log.warning(
                "worker %d (pid %d) %s unexpectedly; restarting it in %.1fs",
                number,
                process.pid,
                describe_exit(code),
                delay,
            )
            try:
                async with asyncio.timeout(delay):
                    await self._stop.wait()
                return code  # stopped during the backoff: it stays down
            except TimeoutError:
                pass
            delay = min(delay * 2, MAX_RESTART_DELAY)
