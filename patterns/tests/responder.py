"""A hand-written responder for the request-reply tests: echoes ``{"n": ..., "by": <pid>}`` to every
request of ``topic`` in ``group``. Run in-process (:func:`serve`) or as a process of its own:
``python responder.py URL TOPIC GROUP`` prints ``ready`` once its group is joined and serves until
its stdin closes."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable

import polybus
from polybus import CORRELATION_HEADER, REPLY_TO_HEADER, Message


async def serve(url: str, topic: str, group: str, ready: Callable[[], None], stop: asyncio.Event) -> int:
    """Answer requests until ``stop`` is set; returns how many it answered."""
    answered = 0
    async with polybus.connect(url) as broker, broker.topic(topic).consumer(group, prefetch=32) as consumer:
        ready()
        while not stop.is_set():
            request = await consumer.receive(timeout=0.2)
            if request is None:
                continue
            body = request.json()
            headers = {CORRELATION_HEADER: request.headers.get(CORRELATION_HEADER, "")}
            await broker.reply(
                request.headers[REPLY_TO_HEADER], Message.of({**body, "by": os.getpid()}, headers=headers)
            )
            await request.ack()
            answered += 1
    return answered


async def _main(url: str, topic: str, group: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_reader(sys.stdin.fileno(), lambda: stop.set() if not sys.stdin.buffer.read1(1) else None)

    def ready() -> None:
        print("ready", flush=True)

    answered = await serve(url, topic, group, ready, stop)
    print(f"answered {answered}", flush=True)


if __name__ == "__main__":
    asyncio.run(_main(*sys.argv[1:4]))
