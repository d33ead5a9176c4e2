"""Cancellation cases: a task blocked in ``receive()`` ends when cancelled, and nothing is lost."""

from __future__ import annotations

import asyncio
import time

import pytest

import polybus
from polybus import Delivery
from polybus.testing._names import unique_name
from polybus.testing.contract._config import ContractConfig
from polybus.testing.contract._helpers import _scratch

__all__ = ["CancelCases"]

PROMPT = 5.0
"""How long a cancelled ``receive()`` may take to end (generous: it is usually immediate)."""

PAUSES = (0.0, 0.0, 0.001, 0.0, 0.003, 0.0, 0.01, 0.0005, 0.0, 0.02)
"""How long each blocked receive waits before its cancel, in turn: the cancel lands at every stage
(before the fetch starts, while it waits on the broker, as messages arrive)."""


class CancelCases:
    """Mixin of :class:`~polybus.testing.contract.BrokerContract`."""

    async def test_cancelling_a_blocked_receive_always_ends_it_and_loses_nothing(
        self, polybus_url: str, polybus_contract_config: ContractConfig
    ) -> None:
        """Three ways to be blocked: waiting for messages (alone, or behind another receive of the
        same consumer), and waiting for room under ``prefetch`` while a settle makes some."""
        cfg = polybus_contract_config
        rounds = cfg.count(1000, minimum=50)
        room_rounds = max(10, rounds // 10)
        print(f"contract: cancelling a blocked receive {rounds} + {room_rounds} (prefetch full) times")
        group = unique_name("g")
        got = _Received()
        async with polybus.connect(polybus_url) as broker:
            topic = _scratch(broker, "cancel-rx")
            async with topic.consumer(group) as consumer, topic.producer() as producer:
                for i in range(rounds):
                    tasks = [
                        asyncio.create_task(consumer.receive(timeout=60)) for _ in range(1 + (i % 3 == 2))
                    ]
                    await asyncio.sleep(PAUSES[i % len(PAUSES)])
                    if i % 10 == 9:  # a message sent meanwhile, some just before the cancel
                        got.sent.append(await producer.send(str(i)))
                        await asyncio.sleep(PAUSES[(i // 10) % len(PAUSES)])
                    await got.cancel(tasks, f"cancel #{i}")
                await got.rest(consumer, cfg.receive_timeout * 2)
            async with topic.consumer(group, prefetch=1) as consumer, topic.producer() as producer:
                for i in range(room_rounds):
                    got.sent.append(await producer.send(f"room-{i}"))
                    held = await consumer.receive(timeout=cfg.receive_timeout)
                    assert held is not None, "a message sent did not arrive"
                    got.add(held)
                    task = asyncio.create_task(consumer.receive(timeout=60))  # blocked: no room
                    await asyncio.sleep(PAUSES[i % len(PAUSES)])
                    await held.ack()  # makes room as the cancel comes
                    await asyncio.sleep(PAUSES[(i * 7) % len(PAUSES)] / 10)
                    await got.cancel([task], f"cancel #{i} under a full prefetch")
                await got.rest(consumer, cfg.receive_timeout * 2)
                assert consumer.in_flight == 0, f"{consumer.in_flight} deliveries left unsettled"
            await _nothing_left_unsettled(topic, group, cfg)


class _Received:
    """What was sent and received, and the checks of each cancel."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.ids: set[str] = set()

    def add(self, delivery: Delivery) -> None:
        assert delivery.id not in self.ids, f"{delivery.id} came back after it was acked"
        self.ids.add(delivery.id)

    async def cancel(self, tasks: list[asyncio.Task[Delivery | None]], what: str) -> None:
        requested = [task.cancel() for task in tasks]
        started = time.monotonic()
        await asyncio.wait(tasks, timeout=PROMPT)
        for task, cancelled in zip(tasks, requested, strict=True):
            took = time.monotonic() - started
            assert task.done(), f"{what} was not honoured: receive still running after {took:.1f}s"
            if cancelled:
                assert task.cancelled(), f"{what} was swallowed: receive returned {task.result()!r}"
            elif (early := task.result()) is not None:  # it had returned before the cancel
                self.add(early)
                await early.ack()

    async def rest(self, consumer: polybus.Consumer, within: float) -> None:
        """Receive (and ack) until every message sent so far arrived; fail if some never do."""
        deadline = time.monotonic() + within
        while not self.ids >= set(self.sent) and time.monotonic() < deadline:
            d = await consumer.receive(timeout=1.0)
            if d is not None:
                self.add(d)
                await d.ack()
        missing = set(self.sent) - self.ids
        assert not missing, f"{len(missing)} of {len(self.sent)} messages sent meanwhile never arrived"
        assert consumer.in_flight == 0, f"{consumer.in_flight} deliveries left unsettled"


async def _nothing_left_unsettled(topic: polybus.Topic, group: str, cfg: ContractConfig) -> None:
    """Where the broker counts them, the group has no backlog and nothing in flight."""
    if not topic.broker.capabilities.backlog_stats:
        return
    deadline = time.monotonic() + cfg.receive_timeout
    while True:  # some brokers count asynchronously
        stats = (await topic.stats()).groups.get(group)
        if stats is None:
            pytest.fail(f"stats() does not list group {group!r}")
        left = [n for n in (stats.backlog, stats.in_flight) if n]
        if not left or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert not left, f"the group still counts backlog={stats.backlog} in_flight={stats.in_flight}"
