"""Resilience cases: a killed consumer process, a handler outliving the lease, cut connections,
outages, and re-sent messages.

Broker differences come in through knobs, never through a branch on the broker here:
``ContractConfig.other_processes``, ``lease`` and ``lease_options`` (a short lease so that a
dead holder's deliveries come back in test time), and the ``polybus_faults`` fixture (a
:class:`~polybus.testing.FaultInjector`, by default a TCP relay in front of the broker).
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time

import pytest

import polybus
from polybus import Support
from polybus.testing._faults import FaultInjector
from polybus.testing._names import unique_name
from polybus.testing._urls import with_options
from polybus.testing.contract._config import ContractConfig
from polybus.testing.contract._helpers import _scratch, collect, expect_nothing, needs

__all__ = ["ResilienceCases"]

QUICK_RECONNECT = polybus.ReconnectPolicy(initial=0.1, maximum=0.5, give_up_after=30)
"""Retries often enough that a one-second outage costs about a second."""
OUTAGE = 1.0
"""Seconds a short outage lasts."""
GIVE_UP = 2.0
"""``give_up_after`` of the policy whose sends must raise in a longer outage."""


def _injector(faults: FaultInjector | None) -> FaultInjector:
    if faults is None:
        pytest.skip("no fault injector: the polybus_faults fixture is None (no host and port to relay)")
    return faults


async def _first_of(consumers: list[polybus.Consumer], timeout: float) -> tuple[int, polybus.Delivery]:
    """The first delivery any of ``consumers`` gets, with the index of the one that got it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for index, consumer in enumerate(consumers):
            delivery = await consumer.receive(timeout=0.2)
            if delivery is not None:
                return index, delivery
    pytest.fail(f"no member of the group got the message within {timeout}s")


async def _until_all_seen(consumer: polybus.Consumer, ids: set[str], seen: set[str], timeout: float) -> None:
    """Receive and ack until every id of ``ids`` is in ``seen`` (duplicates are allowed)."""
    deadline = time.monotonic() + timeout
    while not ids <= seen:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"confirmed but never delivered: {sorted(ids - seen)}"
        delivery = await consumer.receive(timeout=min(remaining, 1.0))
        if delivery is not None:
            seen.add(delivery.id)
            await delivery.ack()


class ResilienceCases:
    """Mixin of :class:`~polybus.testing.contract.BrokerContract`."""

    @pytest.mark.polybus(timeout=120)
    async def test_deliveries_held_by_a_killed_process_come_back_to_the_group(
        self, polybus_url: str, cfg: ContractConfig
    ) -> None:
        if not cfg.other_processes:
            pytest.skip("the broker lives in this process (ContractConfig.other_processes is False)")
        url = with_options(polybus_url, **cfg.lease_options)
        acked, held = 2, 3
        async with polybus.connect(url) as broker:
            count_native = broker.capabilities.delivery_count is Support.NATIVE
            topic = _scratch(broker, "killed")
            group = unique_name("g")
            async with topic.consumer(group):
                pass  # the group exists before the sends
            async with topic.producer() as producer:
                sent = await producer.send_many([f"m{i}" for i in range(acked + held)])
            child = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "polybus.testing._held_consumer",
                url, topic.name, group, str(acked), str(held),
                stdout=asyncio.subprocess.PIPE,
            )  # fmt: skip
            try:
                assert child.stdout is not None
                line = (await asyncio.wait_for(child.stdout.readline(), 60)).decode().split()
                assert line[:1] == ["HOLDING"], f"the consumer process said {line}"
            finally:
                if child.returncode is None:
                    child.send_signal(signal.SIGKILL)
                await child.wait()
            holding = set(line[1:])
            assert len(holding) == held and holding <= set(sent), (line, sent)
            async with topic.consumer(group) as survivor:
                back = await collect(survivor, held, (cfg.lease or 0) + cfg.receive_timeout)
                # what the killed process acked stays acked
                await expect_nothing(survivor, cfg.quiet_period)
        assert sorted(d.id for d in back) == sorted(holding)
        if count_native:
            assert [d.attempt for d in back] == [2] * held

    @pytest.mark.polybus(timeout=90)
    async def test_a_handler_running_past_the_lease_keeps_its_delivery(
        self, polybus_url: str, cfg: ContractConfig
    ) -> None:
        if cfg.lease is None:
            pytest.skip("the broker has no delivery lease (ContractConfig.lease is None)")
        async with polybus.connect(with_options(polybus_url, **cfg.lease_options)) as broker:
            needs(broker.capabilities, "competing_consumers")
            topic = _scratch(broker, "lease")
            group = unique_name("g")
            async with (
                topic.consumer(group) as first,
                topic.consumer(group) as second,
                topic.producer() as producer,
            ):
                await producer.send(b"long job")
                index, job = await _first_of([first, second], cfg.receive_timeout)
                holder, other = (first, second) if index == 0 else (second, first)
                # the handler runs for 2.5 leases: the lease is kept alive, nobody else gets the job
                await expect_nothing(other, 2.5 * cfg.lease)
                await job.ack()
                await expect_nothing(other, cfg.quiet_period)
                await expect_nothing(holder, 0.1)

    async def test_sends_and_receives_resume_after_a_cut_and_an_outage(
        self, polybus_faults: FaultInjector | None, polybus_contract_config: ContractConfig
    ) -> None:
        cfg = polybus_contract_config
        async with (
            _injector(polybus_faults) as faults,
            polybus.connect(
                with_options(faults.url, **cfg.lease_options), reconnect=QUICK_RECONNECT
            ) as broker,
        ):
            topic = _scratch(broker, "cut")
            async with topic.consumer(unique_name("g")) as consumer, topic.producer() as producer:
                confirmed, seen = {await producer.send(b"before")}, set[str]()
                await _until_all_seen(consumer, confirmed, seen, cfg.receive_timeout)

                waiting = asyncio.create_task(consumer.receive(timeout=3 * cfg.receive_timeout))
                await asyncio.sleep(0.3)  # blocked in a fetch when the connections drop
                await faults.cut()
                confirmed.add(await producer.send(b"after a cut"))  # over a new connection
                # The blocked receive recovers: it (or the next one) gets that message within
                # receive_timeout, or within the lease where a fetch cut off in flight may have taken
                # it (an SQS long poll the server still answers: the message stays hidden until then).
                sent, within = time.monotonic(), cfg.receive_timeout + (cfg.lease or 0)
                done, _ = await asyncio.wait([waiting], timeout=within)
                if not done:
                    waiting.cancel()
                    pytest.fail(f"a receive blocked across a cut got nothing {within}s after a send")
                if (woken := waiting.result()) is not None:
                    seen.add(woken.id)
                    await woken.ack()
                remaining = max(0.1, within - (time.monotonic() - sent))
                await _until_all_seen(consumer, confirmed, seen, remaining)

                await faults.stop()
                receiving = asyncio.create_task(consumer.receive(timeout=OUTAGE + 1))
                sending = asyncio.create_task(producer.send(b"during an outage"))
                await asyncio.sleep(OUTAGE)
                await faults.start()
                # a receive waiting through the outage returns (something or None), never raises
                if (early := await receiving) is not None:
                    seen.add(early.id)
                    await early.ack()
                # a send in the outage succeeds once the broker is back, or raises a typed error
                try:
                    confirmed.add(await asyncio.wait_for(sending, 3 * cfg.receive_timeout))
                except polybus.PolybusError:
                    pass
                except TimeoutError:
                    pytest.fail("a send made during a short outage neither returned nor raised")
                confirmed.add(await producer.send(b"after the outage"))
                await _until_all_seen(consumer, confirmed, seen, 3 * cfg.receive_timeout)

    async def test_a_send_in_an_outage_past_the_reconnect_policy_raises(
        self, polybus_faults: FaultInjector | None, polybus_contract_config: ContractConfig
    ) -> None:
        cfg = polybus_contract_config
        policy = polybus.ReconnectPolicy(initial=0.1, maximum=0.5, give_up_after=GIVE_UP)
        async with (
            _injector(polybus_faults) as faults,
            polybus.connect(with_options(faults.url, **cfg.lease_options), reconnect=policy) as broker,
        ):
            topic = _scratch(broker, "down")
            async with topic.consumer(unique_name("g")) as consumer, topic.producer() as producer:
                await producer.send(b"before")
                await faults.stop()
                started = time.monotonic()
                try:
                    await asyncio.wait_for(producer.send(b"never confirmed"), GIVE_UP + cfg.receive_timeout)
                except polybus.PolybusError:
                    pass
                except TimeoutError:
                    pytest.fail(f"a send into an outage still waited after {time.monotonic() - started:.0f}s")
                else:
                    pytest.fail("a send was confirmed while nothing could reach the broker")
                await faults.start()
                after = await producer.send(b"after")  # the producer works again
                seen: set[str] = set()
                await _until_all_seen(consumer, {after}, seen, 3 * cfg.receive_timeout)

    async def test_a_message_resent_with_the_same_id_is_delivered_once(
        self, polybus_url: str, cfg: ContractConfig
    ) -> None:
        async with polybus.connect(polybus_url) as broker:
            needs(broker.capabilities, "dedup")
            topic = _scratch(broker, "dedup")
            async with topic.consumer(unique_name("g")) as consumer, topic.producer() as producer:
                message = polybus.Message.of(b"once", key="k")
                first = await producer.send_many([message])
                again = await producer.send_many([message])  # a retry after an unclear failure
                twice = await producer.send_many([message, message])
                assert first == again == [message.id] and twice == [message.id, message.id]
                other = await producer.send(b"other", key="k")
                got = await collect(consumer, 2, cfg.receive_timeout)
                await expect_nothing(consumer, cfg.quiet_period)
        assert sorted((d.id, d.body) for d in got) == sorted([(message.id, b"once"), (other, b"other")])
