"""Handler tasks cancelled at random points: nothing lost, nothing acked by a cancelled handler.

``run_consumer`` runs ``CONCURRENCY`` handlers on one consumer of a group; a canceller cancels, at
random moments, either one running handler's task (the runner's worker that runs it, or with
``ordered_by_key`` the task of its key: the runner counts that handler as failed, nacks its delivery
and goes on) or the whole ``run_consumer`` task, which it then restarts on a fresh consumer (the
cancelled handlers' deliveries go back to the group as the old one closes). A producer keeps a
backlog until enough handlers were cancelled. The handler books its delivery when it starts and
books "finished" just before it returns, so an ack is only legitimate for a finished delivery. Checked:
every delivery whose handler was cancelled is left unacked (in this process: its ``outcome`` is not
ACK) and comes back; every confirmed message finishes at last (lost = confirmed, never finished).
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Callable

import pytest
from tests.chaos.conftest import Reliability

import polybus
from polybus.testing import Ledger, unique_name
from polybus.testing._urls import with_options

CONCURRENCY = 8
PREFETCH = 16
LEASES: dict[str, dict[str, object]] = {
    "redis": {"visibility_timeout": 2, "claim_interval": 0.25},
    "nats": {"ack_wait": 2},
    "sqs": {"visibility_timeout": 5},
}
"""Short leases: a delivery a cancelled handler left behind comes back in test time even where it is
only handed back when its lease runs out (what ``Consumer`` close hands back comes at once)."""


@pytest.mark.polybus(timeout=300)
@pytest.mark.parametrize("ordered", [False, True], ids=["workers", "ordered"])
async def test_cancelled_handlers(
    chaos_broker: str, chaos_url: str, size: Callable[..., int], reliability: Reliability, ordered: bool
) -> None:
    cancellations = size(1000, least=20)
    url = with_options(chaos_url, **LEASES.get(chaos_broker, {}))
    rng = random.Random(15)
    ledger = Ledger()  # deliveries, booked as the handler starts
    finished = Ledger()  # the same ids, booked as the handler finishes
    running: dict[asyncio.Task[object], polybus.Delivery] = {}
    cancelled: list[polybus.Delivery] = []
    cancelled_by_id: Counter[str] = Counter()

    async def handler(delivery: polybus.Delivery) -> None:
        ledger.record(delivery)
        task = asyncio.current_task()
        assert task is not None
        running[task] = delivery
        try:
            await asyncio.sleep(rng.uniform(0, 0.02))
            finished.record(delivery)  # the last thing before returning: an ack may follow
        except asyncio.CancelledError:
            cancelled.append(delivery)
            cancelled_by_id[delivery.id] += 1
            raise
        finally:
            running.pop(task, None)

    async def produce(topic: polybus.Topic) -> None:
        """Batches of 50 until enough handlers were cancelled (each id confirmed in both ledgers)."""
        async with topic.producer() as producer:
            number = 0
            while len(cancelled) < cancellations:
                batch = [
                    polybus.Message(f"{n}".encode(), key=f"k{n % 20}") for n in range(number, number + 50)
                ]
                number += 50
                assert await ledger.send(producer, batch)
                finished.confirmed(ledger.sent_ids)
                while ledger.outstanding > 2 * PREFETCH:  # noqa: ASYNC110 - a backlog, not a flood
                    await asyncio.sleep(0.01)

    topic_name = unique_name("chaos-cancel")
    async with polybus.connect(url) as broker:
        topic = broker.topic(topic_name)
        async with topic.consumer("chaos", prefetch=1):
            pass  # the group exists before the first send
        sending = asyncio.create_task(produce(topic))
        consumer = topic.consumer("chaos", prefetch=PREFETCH)
        await consumer.open()
        restarts = Counter[str]()

        def start_runner() -> asyncio.Task[None]:
            return asyncio.create_task(
                polybus.run_consumer(
                    consumer, handler, concurrency=CONCURRENCY, retry_delay=0.1, ordered_by_key=ordered
                )
            )

        def ended(task: asyncio.Task[None]) -> None:
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]

        runner = start_runner()
        try:
            async with asyncio.timeout(240):
                while len(cancelled) < cancellations:
                    await asyncio.sleep(rng.uniform(0.002, 0.03))
                    if runner.done():  # the runner ended by itself: every worker of it was cancelled
                        ended(runner)
                        restarts["ended"] += 1
                        runner = start_runner()
                        continue
                    if not running:
                        continue
                    ledger.fault("cancel")
                    if rng.random() < 0.9:  # one handler's task
                        task = rng.choice(list(running))
                        task.cancel()
                        await asyncio.sleep(0)
                    else:  # the whole runner: its handlers' deliveries go back as the consumer closes
                        runner.cancel()
                        await asyncio.gather(runner, return_exceptions=True)
                        await consumer.aclose()
                        consumer = topic.consumer("chaos", prefetch=PREFETCH)
                        await consumer.open()
                        restarts["runner"] += 1
                        runner = start_runner()
                # no more cancels: every confirmed message must finish now
                await sending
                while not finished.complete():
                    if runner.done():
                        ended(runner)
                        restarts["ended"] += 1
                        runner = start_runner()
                    await finished.wait_complete(1.0)
        finally:
            sending.cancel()
            runner.cancel()
            await asyncio.gather(runner, sending, return_exceptions=True)
            await consumer.aclose()
            await topic.delete()

    acked_cancelled = [d for d in cancelled if d.outcome is polybus.Outcome.ACK]
    report = ledger.report()
    unfinished = finished.report().lost
    reliability(
        report, cancelled=len(cancelled), unfinished=len(unfinished), ordered=ordered, restarts=dict(restarts)
    )
    assert not acked_cancelled, f"{len(acked_cancelled)} deliveries acked by a cancelled handler"
    assert not unfinished
    assert len(cancelled) >= cancellations
    for message_id, times in cancelled_by_id.items():  # each cancelled delivery came back
        assert ledger.seen(message_id) > times
    report.check()
