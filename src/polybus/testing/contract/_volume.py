"""Ordering and volume cases: per-key order, many producers and consumers, consumer churn."""

from __future__ import annotations

import asyncio
import time

import polybus
from polybus.testing._names import unique_name
from polybus.testing.contract._config import ContractConfig
from polybus.testing.contract._helpers import _caps, _scratch, collect, needs

__all__ = ["VolumeCases"]


class VolumeCases:
    """Mixin of :class:`~polybus.testing.contract.BrokerContract`."""

    async def test_per_key_order_for_a_single_consumer(self, polybus_url: str, cfg: ContractConfig) -> None:
        needs((await _caps(polybus_url)), "ordering_per_key")
        per_key = cfg.count(30, minimum=10)
        keys = ["k1", "k2", "k3"]
        async with polybus.connect(polybus_url) as broker:
            topic = _scratch(broker, "order")
            async with topic.consumer(unique_name("g")) as consumer, topic.producer() as producer:
                messages = [polybus.Message.of(f"{k}:{i}", key=k) for i in range(per_key) for k in keys]
                for start in range(0, len(messages), 10):  # several batches, interleaved keys
                    await producer.send_many(messages[start : start + 10])
                got = await collect(consumer, len(messages), cfg.receive_timeout + len(messages) / 20)
        assert len(got) == len(messages)
        for k in keys:
            seq = [int(d.text().split(":")[1]) for d in got if d.key == k]
            assert seq == list(range(per_key)), f"key {k} out of order: {seq}"

    async def test_many_producers_many_consumers_lose_nothing(
        self, polybus_url: str, cfg: ContractConfig
    ) -> None:
        needs((await _caps(polybus_url)), "competing_consumers")
        n_producers, n_consumers = 50, 10
        per_producer = max(1, cfg.count(5000, minimum=100) // n_producers)
        total = per_producer * n_producers
        print(f"contract: {n_producers} producers x {per_producer} messages -> {n_consumers} consumers")
        group = unique_name("g")
        seen: set[str] = set()
        done = asyncio.Event()
        async with polybus.connect(polybus_url) as broker:
            topic = _scratch(broker, "volume")
            consumers = [topic.consumer(group) for _ in range(n_consumers)]
            for c in consumers:
                await c.open()

            async def consume(consumer: polybus.Consumer) -> None:
                while not done.is_set():
                    d = await consumer.receive(timeout=0.5)
                    if d is not None:
                        seen.add(d.text())
                        await d.ack()
                        if len(seen) >= total:
                            done.set()

            async def produce(p: int) -> None:
                async with topic.producer() as producer:
                    for i in range(per_producer):
                        await producer.send(f"{p}:{i}")

            consuming = [asyncio.create_task(consume(c)) for c in consumers]
            await asyncio.gather(*(produce(p) for p in range(n_producers)))
            try:
                await asyncio.wait_for(done.wait(), cfg.receive_timeout + total / 50)
            except TimeoutError:
                pass
            done.set()
            await asyncio.gather(*consuming)
            for c in consumers:
                await c.aclose()
        expected = {f"{p}:{i}" for p in range(n_producers) for i in range(per_producer)}
        missing = expected - seen
        assert not missing, f"{len(missing)} of {total} messages lost, e.g. {sorted(missing)[:5]}"

    async def test_consumers_reopened_while_messages_flow_lose_nothing(
        self, polybus_url: str, cfg: ContractConfig
    ) -> None:
        total = cfg.count(400, minimum=40)
        group = unique_name("g")
        seen: set[bytes] = set()
        async with polybus.connect(polybus_url) as broker:
            topic = _scratch(broker, "churn")
            async with topic.consumer(group):
                pass

            async def produce() -> None:
                async with topic.producer() as producer:
                    for start in range(0, total, 10):
                        await producer.send_many(
                            [str(i).encode() for i in range(start, min(total, start + 10))]
                        )
                        await asyncio.sleep(0.01)

            async def churn(rounds: int) -> None:
                for _ in range(rounds):
                    async with topic.consumer(group, prefetch=5) as consumer:
                        for _ in range(5):
                            d = await consumer.receive(timeout=0.3)
                            if d is not None:
                                seen.add(d.body)
                                await d.ack()
                        await consumer.receive(timeout=0.05)  # maybe hold one unacked while closing

            await asyncio.gather(produce(), churn(8), churn(8))
            async with topic.consumer(group) as final:
                deadline = time.monotonic() + cfg.receive_timeout * 2 + total / 20
                while len(seen) < total and time.monotonic() < deadline:
                    d = await final.receive(timeout=1.0)
                    if d is not None:
                        seen.add(d.body)
                        await d.ack()
        missing = {str(i).encode() for i in range(total)} - seen
        assert not missing, f"{len(missing)} of {total} lost across consumer restarts"
