"""The service that the process tests of ``polybus run`` run (test_run_processes.py), configured by
the environment only: ``POLYBUS_*`` for polybus (URL, topic names, overrides), ``RUN_RESULTS`` (a
folder) and ``RUN_SLEEP`` (seconds per handler) for the test.

Each process appends one line per event to files of its own, named by its pid (line-buffered, so a
SIGKILL leaves whole lines): ``started-<pid>`` and ``done-<pid>`` hold the bodies of the messages
whose handler started and finished; ``ordered-<pid>`` holds ``key seq start_ns end_ns``.
"""

import asyncio
import os
import time
from pathlib import Path
from typing import TextIO

import polybus

RESULTS = Path(os.environ.get("RUN_RESULTS", "."))
SLEEP = float(os.environ.get("RUN_SLEEP", "0"))
_files: dict[str, TextIO] = {}


def record(kind: str, line: str) -> None:
    out = _files.get(kind)
    if out is None:
        out = _files[kind] = (RESULTS / f"{kind}-{os.getpid()}").open("a", buffering=1)
    out.write(line + "\n")


app = polybus.App()


@app.subscribe("jobs", group="workers")  # concurrency and prefetch come from the config
async def work(delivery: polybus.Delivery) -> None:
    body = delivery.body.decode()
    record("started", body)
    if SLEEP:
        await asyncio.sleep(SLEEP)
    record("done", body)


ordered = polybus.App()


@ordered.subscribe("jobs", group="workers", concurrency=16, ordered_by_key=True)
async def in_order(delivery: polybus.Delivery) -> None:
    started = time.monotonic_ns()  # one clock for every process of the machine
    await asyncio.sleep(0.001)
    record("ordered", f"{delivery.key} {delivery.body.decode()} {started} {time.monotonic_ns()}")
