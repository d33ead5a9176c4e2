"""The service ``polybus run`` runs in the SIGTERM scenario (test_sigterm.py), configured by the
environment only: ``POLYBUS_*`` for polybus, ``RUN_RESULTS`` (a folder) for the test.

The handler sleeps as many seconds as the message's body says. It appends ``id attempt`` to
``started-<pid>`` as it starts and to ``finished-<pid>`` just before it returns (line-buffered files
of its process): the runner acks only after that line is written.
"""

import asyncio
import os
from pathlib import Path
from typing import TextIO

import polybus

RESULTS = Path(os.environ.get("RUN_RESULTS", "."))
_files: dict[str, TextIO] = {}


def record(kind: str, delivery: polybus.Delivery) -> None:
    out = _files.get(kind)
    if out is None:
        out = _files[kind] = (RESULTS / f"{kind}-{os.getpid()}").open("a", buffering=1)
    out.write(f"{delivery.id} {delivery.attempt}\n")


app = polybus.App()


@app.subscribe("jobs", group="workers")  # concurrency and prefetch come from the environment
async def work(delivery: polybus.Delivery) -> None:
    record("started", delivery)
    await asyncio.sleep(float(delivery.body))
    record("finished", delivery)
