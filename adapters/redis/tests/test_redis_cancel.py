"""Cancelling a task blocked in ``receive()`` always ends it, promptly, and loses nothing.

The regression test of the cancellation redis-py's ``wait_for`` swallowed on Python 3.11
(CPython gh-86296): the task then kept fetching until the consumer was closed. The cancels land
at every point of a fetch (writing, blocked in ``XREADGROUP``, reading a reply full of entries)
while a producer keeps sending, for a group member and for a listener, on the adapter's own
stream path and on the fallback through redis-py's public API (``_compat``).
"""

from __future__ import annotations

import asyncio
import time

import pytest
from polybus_redis import _compat

import polybus
from polybus.testing import unique_name

CANCELS = 1000
PROMPT = 1.0
"""Longest a cancelled receive() may take to end (it is normally well under a millisecond)."""


@pytest.fixture(params=["streams", "fallback"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "fallback":
        monkeypatch.setattr(_compat, "streams", lambda conn: None)
    return str(request.param)


async def _cancel_many(consumer: polybus.Consumer, n: int) -> tuple[list[polybus.Delivery], float]:
    """Cancel ``n`` receive() tasks at varying points; the deliveries that won the race, and the
    slowest time a cancel took to end its task."""
    got: list[polybus.Delivery] = []
    slowest = 0.0
    for i in range(n):
        task = asyncio.create_task(consumer.receive())
        if i % 16 == 15:
            await asyncio.sleep(0.002)  # blocked in the server, or reading a reply
        else:
            for _ in range(i % 16):  # connecting, writing, waiting for the write
                await asyncio.sleep(0)
        requested = task.cancel()  # False: receive() had returned already
        started = time.monotonic()
        done, _ = await asyncio.wait({task}, timeout=5)
        slowest = max(slowest, time.monotonic() - started)
        assert done, f"cancel {i} was lost: receive() still running after 5 s"
        assert task.cancelled() or not requested, f"cancel {i} was lost: receive() returned normally"
        if not task.cancelled():
            delivery = task.result()
            assert delivery is not None
            got.append(delivery)
            await delivery.ack()
    return got, slowest


@pytest.mark.parametrize("group", [True, False], ids=["group", "listener"])
async def test_a_thousand_cancels_each_end_receive_promptly_and_lose_nothing(
    polybus_url: str, path: str, group: bool
) -> None:
    sent = [f"m{i}".encode() for i in range(3000)]
    async with polybus.connect(polybus_url, visibility_timeout=2.0, claim_interval=0.25) as broker:
        topic = broker.topic(unique_name("cancel"))
        group_name = unique_name("g") if group else None
        async with topic.consumer(group_name) as consumer, topic.producer() as producer:

            async def produce() -> None:
                for start in range(0, len(sent), 10):
                    await producer.send_many(sent[start : start + 10])
                    await asyncio.sleep(0.001)

            producing = asyncio.create_task(produce())
            try:
                got, slowest = await _cancel_many(consumer, CANCELS)
                await producing
            finally:
                producing.cancel()
            deadline = time.monotonic() + 20
            while len(got) < len(sent) and time.monotonic() < deadline:
                delivery = await consumer.receive(timeout=1)
                if delivery is not None:
                    got.append(delivery)
                    await delivery.ack()
            assert consumer.in_flight == 0
        if group_name is not None:
            stats = (await topic.stats()).groups[group_name]
            assert (stats.backlog, stats.in_flight) == (0, 0), stats
        await topic.delete()
    assert slowest < PROMPT, f"a cancelled receive() took {slowest:.3f}s to end"
    bodies = [d.body for d in got]
    assert sorted(set(bodies)) == sorted(sent), f"lost {len(set(sent) - set(bodies))} of {len(sent)}"
    if path == "streams":  # what Redis answered before a cancel is kept, never redelivered
        assert len(bodies) == len(sent), f"{len(bodies) - len(sent)} duplicates"
