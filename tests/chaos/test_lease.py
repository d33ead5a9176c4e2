"""A handler that runs three times the broker's lease while the other members of its group poll:
its message is not handed to anyone else meanwhile (the adapter keeps the lease alive), and every
message is delivered exactly once.

The lease is the broker's: SQS's visibility timeout, NATS's ``ack_wait``, the visibility timeout
after which a Redis member reclaims an idle entry, and Kafka's ``max_poll_interval_ms`` (a member
that does not poll for that long leaves its group; its heartbeats run in the background, so the
session timeout is no lease on a handler).
"""

from __future__ import annotations

import asyncio
import time

import pytest
from tests.chaos.conftest import Reliability

import polybus
from polybus.testing import Ledger, unique_name
from polybus.testing._urls import with_options

LEASES: dict[str, tuple[float, dict[str, object]]] = {
    "redis": (1.0, {"visibility_timeout": 1, "claim_interval": 0.2}),
    "nats": (1.0, {"ack_wait": 1}),
    "sqs": (2.0, {"visibility_timeout": 2}),
    "kafka": (1.0, {"max_poll_interval_ms": 1000}),
}
"""Seconds of the shortest lease each broker takes, and the URL options that set it."""
SKIPS = {
    "memory": "memory:// has no delivery lease: a delivery is held until settled or its consumer leaves",
    "rabbitmq": (
        "RabbitMQ has no lease a client can extend: an unacked delivery is held until the channel "
        "closes, and its consumer_timeout (30 min by default) cannot be under a minute (docs/rabbitmq.md)"
    ),
}
MESSAGES = 6
MEMBERS = 4
PREFETCH = 2
"""Each member holds at most two messages: at least one member always has room and polls."""


@pytest.mark.polybus(timeout=120)
async def test_handler_longer_than_lease_is_not_redelivered(
    chaos_broker: str, chaos_url: str, reliability: Reliability
) -> None:
    if chaos_broker in SKIPS:
        pytest.skip(SKIPS[chaos_broker])
    lease, options = LEASES[chaos_broker]
    url = with_options(chaos_url, **options)
    hold = 3 * lease
    topic_name, group = unique_name("chaos-lease"), "lease"
    ledger = Ledger()
    running: set[str] = set()
    while_running: list[str] = []
    finished = 0
    stop = asyncio.Event()
    opened = 0

    async def handler(delivery: polybus.Delivery) -> None:
        nonlocal finished
        if delivery.id in running:
            while_running.append(delivery.id)
        ledger.record(delivery)
        running.add(delivery.id)
        try:
            await asyncio.sleep(hold)
        finally:
            running.discard(delivery.id)
            finished += 1

    async def member() -> None:
        nonlocal opened
        async with (
            polybus.connect(url) as broker,
            broker.topic(topic_name).consumer(group, prefetch=PREFETCH) as consumer,
        ):
            opened += 1
            await polybus.run_consumer(consumer, handler, concurrency=PREFETCH, stop=stop)

    async with polybus.connect(url) as broker:
        topic = broker.topic(topic_name)
        await topic.ensure()
        async with topic.consumer(group, prefetch=1):
            pass  # the group exists before the sends
        started = time.monotonic()
        try:
            async with asyncio.TaskGroup() as tasks:
                members = [tasks.create_task(member()) for _ in range(MEMBERS)]
                while opened < MEMBERS:
                    assert not any(m.done() for m in members), "a member failed to join"
                    await asyncio.sleep(0.05)
                async with topic.producer() as producer:
                    jobs = [polybus.Message(b"long job") for _ in range(MESSAGES)]
                    assert await ledger.send(producer, jobs)
                assert await ledger.wait_complete(30), ledger.report().summary()
                deadline = time.monotonic() + 4 * hold + 30
                while finished < MESSAGES + len(while_running) and time.monotonic() < deadline:  # noqa: ASYNC110
                    await asyncio.sleep(0.1)
                # a redelivery after the ack would show here: watch past another lease
                await asyncio.sleep(2 * lease)
                stop.set()
        finally:
            stop.set()
            await topic.delete()
    report = ledger.report()
    reliability(
        report,
        lease=lease,
        handler_seconds=hold,
        redelivered_while_running=len(while_running),
        elapsed=round(time.monotonic() - started, 1),
    )
    assert not while_running, f"redelivered while its handler ran: {while_running} [{report.summary()}]"
    report.check(max_duplicates=0)
