"""A consumer process for the chaos scenarios that SIGKILL consumers (test_consumers.py).

    python tests/chaos/consumer_worker.py URL TOPIC GROUP PREFETCH CONCURRENCY SLEEP OUT

Consumes ``GROUP`` of ``TOPIC`` with :func:`polybus.run_consumer` (``CONCURRENCY`` handlers, the
consumer's ``PREFETCH``). The handler appends ``id attempt monotonic-time`` to ``OUT`` as it starts
(line-buffered: a SIGKILL leaves whole lines, at most the last one cut), sleeps ``SLEEP`` seconds
and returns: the runner acks it. Prints ``READY`` once the consumer joined the group. Runs until
killed or SIGTERM. Imports polybus only, so that it starts fast.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time

import polybus


async def main(
    url: str, topic: str, group: str, prefetch: int, concurrency: int, sleep: float, out: str
) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    with open(out, "a", buffering=1, encoding="utf-8") as book:  # noqa: ASYNC230 - once, at start

        async def handler(delivery: polybus.Delivery) -> None:
            book.write(f"{delivery.id} {delivery.attempt} {time.monotonic()}\n")
            await asyncio.sleep(sleep)

        async with (
            polybus.connect(url) as broker,
            broker.topic(topic).consumer(group, prefetch=prefetch) as consumer,
        ):
            print("READY", flush=True)
            await polybus.run_consumer(consumer, handler, concurrency=concurrency, stop=stop)


if __name__ == "__main__":
    url, topic, group, prefetch, concurrency, sleep, out = sys.argv[1:8]
    asyncio.run(main(url, topic, group, int(prefetch), int(concurrency), float(sleep), out))
