"""``run_stream``: a stream of messages through a broker, every one of them booked in a :class:`Ledger`,
while a fault of your choosing runs beside it.

    report = await run_stream(url, "orders-chaos", messages=20_000, fault=kill_three_times)
    report.check(max_duplicates=...)

``producers`` tasks send batches of ``batch`` messages, each on its own connection; a batch whose
send raised is sent again, under the same ids, until the broker confirms it (what an at-least-once
producer does). ``consumers`` consumers of one group, each on its own connection, run
:func:`polybus.run_consumer` with a handler that books the delivery and acks it. ``fault(ledger)``
runs from the first send; it records the faults it injects with :meth:`Ledger.fault`. When the
producers are done and the fault has returned, the consumers drain until every confirmed id was
delivered or ``drain_timeout`` passed; the report says what was lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import polybus
from polybus.testing._ledger import Ledger, LedgerReport

__all__ = ["run_stream"]

Fault = Callable[[Ledger], Coroutine[Any, Any, None]]


async def run_stream(
    url: str,
    topic: str,
    *,
    messages: int,
    producers: int = 4,
    consumers: int = 4,
    batch: int = 50,
    group: str = "chaos",
    prefetch: int = 32,
    concurrency: int = 4,
    fault: Fault | None = None,
    ledger: Ledger | None = None,
    handler: Callable[[polybus.Delivery], Awaitable[None]] | None = None,
    send_interval: float = 0.0,
    drain_timeout: float = 120.0,
    send_timeout: float = 300.0,
    consumer_options: dict[str, Any] | None = None,
) -> LedgerReport:
    """Send ``messages`` to ``topic`` on ``url`` and consume them as one group under ``fault``.

    ``handler`` runs on each delivery after it was booked (it may sleep, raise or settle it
    itself); ``send_interval`` spaces each producer's batches (to spread the stream over a fault).
    """
    ledger = ledger or Ledger()
    stop = asyncio.Event()
    options = consumer_options or {}

    async def on_delivery(delivery: polybus.Delivery) -> None:
        ledger.record(delivery)
        if handler is not None:
            await handler(delivery)

    async def consume() -> None:
        while not stop.is_set():
            try:
                async with polybus.connect(url) as broker:
                    consumer = broker.topic(topic).consumer(group, prefetch=prefetch, **options)
                    async with consumer:
                        await polybus.run_consumer(consumer, on_delivery, concurrency=concurrency, stop=stop)
            except polybus.PolybusError:
                await asyncio.sleep(0.5)  # could not connect or join (a fault): try again

    async def produce(share: range) -> None:
        deadline = time.monotonic() + send_timeout
        position = share.start
        while position < share.stop:
            try:
                async with polybus.connect(url) as broker, broker.topic(topic).producer() as producer:
                    for start in range(position, share.stop, batch):
                        chunk = [
                            polybus.Message(body=f"{n}".encode())
                            for n in range(start, min(start + batch, share.stop))
                        ]
                        while not await ledger.send(producer, chunk):
                            if time.monotonic() > deadline:
                                raise TimeoutError(f"a batch was not confirmed within {send_timeout}s")
                            await asyncio.sleep(0.2)
                        position = start + batch
                        if send_interval:
                            await asyncio.sleep(send_interval)
            except polybus.PolybusError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)  # could not connect or close (a fault): connect again

    async with polybus.connect(url) as broker:
        await broker.topic(topic).ensure()
        # join the group before the first send, so that a group starting at "latest" misses nothing
        async with broker.topic(topic).consumer(group, prefetch=1, **options):
            pass

    per = -(-messages // producers)
    shares = [range(i, min(i + per, messages)) for i in range(0, messages, per)]
    async with asyncio.TaskGroup() as tasks:
        for _ in range(consumers):
            tasks.create_task(consume())
        sending = [tasks.create_task(produce(share)) for share in shares]
        faulting: asyncio.Task[None] | None = None
        if fault is not None:
            faulting = tasks.create_task(fault(ledger))
        try:
            await asyncio.gather(*sending)
            if faulting is not None:
                await faulting
            await ledger.wait_complete(drain_timeout)
        finally:
            stop.set()
            for task in (*sending, faulting):
                if task is not None and not task.done():
                    task.cancel()
    with contextlib.suppress(Exception):
        async with polybus.connect(url) as broker:
            await broker.topic(topic).delete()
    return ledger.report()
