"""Group cases: fan-out, durable groups, competing consumers, group-less listeners."""

from __future__ import annotations

import asyncio
import collections

import polybus
from polybus.testing._names import unique_name
from polybus.testing.contract._config import ContractConfig
from polybus.testing.contract._helpers import _caps, _scratch, bodies, collect, expect_nothing, needs, one

__all__ = ["GroupCases"]


class GroupCases:
    """Mixin of :class:`~polybus.testing.contract.BrokerContract`."""

    async def test_every_group_gets_every_message(self, polybus_url: str, cfg: ContractConfig) -> None:
        needs((await _caps(polybus_url)), "fan_out")
        n = cfg.count(100)
        async with polybus.connect(polybus_url) as broker:
            topic = _scratch(broker, "fan")
            async with (
                topic.consumer("billing") as billing,
                topic.consumer("email") as email,
                topic.producer() as producer,
            ):
                await producer.send_many([str(i) for i in range(n)])
                got_billing = await collect(billing, n, cfg.receive_timeout + n / 50)
                got_email = await collect(email, n, cfg.receive_timeout + n / 50)
        expected = {str(i).encode() for i in range(n)}
        assert set(bodies(got_billing)) == expected
        assert set(bodies(got_email)) == expected

    async def test_group_keeps_messages_sent_while_no_member_listens(
        self, polybus_url: str, cfg: ContractConfig
    ) -> None:
        async with polybus.connect(polybus_url) as broker:
            topic = _scratch(broker, "durable")
            group = unique_name("g")
            async with topic.producer() as producer:
                await producer.send(b"before the group existed")
                async with topic.consumer(group):
                    pass  # joining creates the group
                await producer.send(b"while nobody listened")
            async with topic.consumer(group) as consumer:
                got = await one(consumer, cfg.receive_timeout)
                await got.ack()
                assert got.body == b"while nobody listened"
                await expect_nothing(consumer, cfg.quiet_period)

    async def test_competing_consumers_share_without_loss(
        self, polybus_url: str, cfg: ContractConfig
    ) -> None:
        needs((await _caps(polybus_url)), "competing_consumers")
        n = cfg.count(300)
        group = unique_name("workers")
        async with polybus.connect(polybus_url) as broker:
            topic = _scratch(broker, "compete")
            consumers = [topic.consumer(group, prefetch=10) for _ in range(3)]
            for c in consumers:
                await c.open()
            counts: collections.Counter[bytes] = collections.Counter()
            per_consumer = [0, 0, 0]
            done = asyncio.Event()

            async def work(index: int, consumer: polybus.Consumer) -> None:
                while not done.is_set():
                    d = await consumer.receive(timeout=0.5)
                    if d is None:
                        continue
                    counts[d.body] += 1
                    per_consumer[index] += 1
                    await asyncio.sleep(0.01)  # the handler's work: the others take messages meanwhile
                    await d.ack()
                    if len(counts) == n:
                        done.set()

            async with topic.producer() as producer:
                workers = [asyncio.create_task(work(i, c)) for i, c in enumerate(consumers)]
                # a key each: on a partitioned broker the messages spread over every partition
                await producer.send_many([polybus.Message.of(str(i), key=f"k{i}") for i in range(n)])
                try:
                    await asyncio.wait_for(done.wait(), cfg.receive_timeout + n / 20)
                except TimeoutError:
                    pass
                done.set()
                await asyncio.gather(*workers)
            for c in consumers:
                await c.aclose()
        missing = {str(i).encode() for i in range(n)} - set(counts)
        print(f"contract: {n} messages shared by 3 consumers as {per_consumer}")
        assert not missing, f"{len(missing)} of {n} messages never arrived"
        assert sum(per_consumer) >= n
        assert sum(1 for got in per_consumer if got) > 1, f"one consumer did all the work: {per_consumer}"

    async def test_listener_without_group_sees_messages_while_listening(
        self, polybus_url: str, cfg: ContractConfig
    ) -> None:
        async with polybus.connect(polybus_url) as broker:
            topic = _scratch(broker, "listen")
            async with topic.producer() as producer:
                await producer.send(b"before listening")
                async with topic.consumer() as listener, topic.consumer("g") as grouped:
                    await producer.send(b"while listening")
                    got = await one(listener, cfg.receive_timeout)
                    await got.ack()
                    assert got.body == b"while listening"
                    await expect_nothing(listener, cfg.quiet_period)
                    d = await one(grouped, cfg.receive_timeout)
                    await d.ack()
                    assert d.body == b"while listening"
