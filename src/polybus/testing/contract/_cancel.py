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
        cfg = polybus_contract_config
        rounds = cfg.count(1000, minimum=50)
        every = 10  # a message is sent every `every` rounds, some right before the cancel
        print(f"contract: cancelling a blocked receive {rounds} times")
        group = unique_name("g")
        got: dict[str, Delivery] = {}
        async with polybus.connect(polybus_url) as broker:
            topic = _scratch(broker, "cancel-rx")
            async with topic.consumer(group) as consumer, topic.producer() as producer:
                sent: list[str] = []
                for i in range(rounds):
                    task = asyncio.create_task(consumer.receive(timeout=60))
                    await asyncio.sleep(PAUSES[i % len(PAUSES)])
                    if i % every == every - 1:
                        sent.append(await producer.send(str(i)))
                        await asyncio.sleep(PAUSES[(i // every) % len(PAUSES)])
                    requested = task.cancel()
                    started = time.monotonic()
                    await asyncio.wait({task}, timeout=PROMPT)
                    took = time.monotonic() - started
                    assert task.done(), (
                        f"cancel #{i} was not honoured: receive still running after {took:.1f}s"
                    )
                    if requested:
                        assert task.cancelled(), (
                            f"cancel #{i} was swallowed: receive returned {task.result()!r}"
                        )
                    elif (early := task.result()) is not None:  # it had returned before the cancel
                        got[early.id] = early
                        await early.ack()
                deadline = time.monotonic() + cfg.receive_timeout * 2
                while len(got) < len(sent) and time.monotonic() < deadline:
                    d = await consumer.receive(timeout=1.0)
                    if d is not None:
                        assert d.id not in got or got[d.id].outcome is None, f"{d.id} came back after its ack"
                        got[d.id] = d
                        await d.ack()
                missing = set(sent) - set(got)
                assert not missing, f"{len(missing)} of {len(sent)} messages sent meanwhile never arrived"
                assert consumer.in_flight == 0, f"{consumer.in_flight} deliveries left unsettled"
                await _nothing_left_unsettled(topic, group, cfg)


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
