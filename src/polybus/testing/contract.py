"""The polybus contract suite: the semantic model of DESIGN.md, checked against any broker.

Use it from an adapter's tests::

    # tests/conftest.py                         # tests/test_contract.py
    @pytest.fixture(scope="session")            from polybus.testing.contract import BrokerContract
    def polybus_url() -> str:
        return broker_url("redis")              class TestContract(BrokerContract):
                                                    pass

or against any URL: ``pytest -p polybus.testing.plugin --pyargs polybus.testing.test_contract
--polybus-url=nats://localhost:4222``.

Every case opens its own broker and uses fresh topic and group names. Cases that a broker's
declared capabilities do not cover are skipped with the reason. A broker that is slow (SQS
emulators) may override the ``polybus_contract_config`` fixture to scale message counts down; the
semantics checked stay the same and the scaling is printed in the test output.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import time
import urllib.parse
from collections.abc import Iterator

import pydantic
import pytest

import polybus
from polybus import Capabilities, Delivery, Support
from polybus.testing._names import unique_name

__all__ = ["BrokerContract", "ContractConfig"]


@dataclasses.dataclass(frozen=True)
class ContractConfig:
    """Knobs a broker may turn; the defaults suit a broker on localhost."""

    scale: float = 1.0
    """Multiplies the message counts of the volume cases (never below their minimum)."""
    receive_timeout: float = 10.0
    """How long a message that must arrive may take (covers rebalances and visibility timeouts)."""
    quiet_period: float = 1.5
    """How long to watch to be sure that a message does *not* arrive."""
    nack_delay: float = 2.0
    """The delay used by the ``nack(delay)`` cases."""
    partitioned: bool = False
    """Members of a group own partitions (Kafka): the next message of a partition whose member
    holds unsettled work waits for that member instead of going to another one."""

    def count(self, n: int, minimum: int = 20) -> int:
        return max(minimum, int(n * self.scale))


class Model(pydantic.BaseModel):
    order: int
    item: str


# -- helpers ---------------------------------------------------------------------------------


async def collect(consumer: polybus.Consumer, n: int, timeout: float, *, ack: bool = True) -> list[Delivery]:
    """Receive until ``n`` deliveries arrived or ``timeout`` passed; ack each (unless told not to)."""
    got: list[Delivery] = []
    deadline = time.monotonic() + timeout
    while len(got) < n:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        delivery = await consumer.receive(timeout=min(remaining, 1.0))
        if delivery is None:
            continue
        got.append(delivery)
        if ack:
            await delivery.ack()
    return got


async def expect_nothing(consumer: polybus.Consumer, period: float) -> None:
    """Fail if anything arrives within ``period`` seconds."""
    delivery = await consumer.receive(timeout=period)
    assert delivery is None, f"expected no delivery, got {delivery!r} body={delivery.body[:80]!r}"


async def one(consumer: polybus.Consumer, timeout: float) -> Delivery:
    delivery = await consumer.receive(timeout=timeout)
    assert delivery is not None, f"no delivery within {timeout}s on {consumer!r}"
    return delivery


_SCRATCH: list[str] = []
"""Topics the running case made, deleted after it so that real servers do not fill up."""


def _scratch(broker: polybus.Broker, prefix: str) -> polybus.Topic:
    topic = broker.topic(unique_name(prefix))
    _SCRATCH.append(topic.name)
    return topic


async def _delete_topics(url: str, names: list[str]) -> None:
    async with polybus.connect(url) as broker:
        for name in names:
            with contextlib.suppress(polybus.PolybusError):
                await broker.topic(name).delete()


def needs(caps: Capabilities, name: str) -> Support:
    level: Support = getattr(caps, name)
    if not level:
        pytest.skip(f"broker declares {name}=unsupported")
    return level


def bodies(deliveries: list[Delivery]) -> list[bytes]:
    return [d.body for d in deliveries]


# -- the suite ----------------------------------------------------------------------------------


@pytest.mark.polybus(timeout=240)
class BrokerContract:
    """Subclass in a test module; provide a ``polybus_url`` fixture (the plugin has a default)."""

    @pytest.fixture(autouse=True)
    def _delete_scratch_topics(self, polybus_url: str) -> Iterator[None]:
        _SCRATCH.clear()
        yield
        names = list(_SCRATCH)
        _SCRATCH.clear()
        if names:
            try:
                asyncio.run(asyncio.wait_for(_delete_topics(polybus_url, names), 60))
            except Exception as exc:  # cleanup must never turn a result into an error
                print(f"contract: could not delete scratch topics {names}: {exc!r}")

    # --- publish and consume -------------------------------------------------------------------

    async def test_roundtrip_keeps_body_headers_key_and_id(
        self, polybus_url: str, polybus_contract_config: ContractConfig
    ) -> None:
        cfg = polybus_contract_config
        async with polybus.connect(polybus_url) as broker:
            topic = _scratch(broker, "rt")
            async with topic.consumer(unique_name("g")) as consumer, topic.producer() as producer:
                before = time.time()
                body = bytes(range(256)) * 4
                sent_id = await producer.send(body, key="customer-7", headers={"trace": "abc", "x-n": "1"})
                got = await one(consumer, cfg.receive_timeout)
                await got.ack()
        assert got.body == body
        assert got.headers["trace"] == "abc" and got.headers["x-n"] == "1"
        assert got.content_type == "application/octet-stream"
        assert got.key == "customer-7"
        assert got.id == sent_id
        assert got.topic == topic.name
        assert got.attempt == 1
        assert before - 300 <= got.timestamp <= time.time() + 300, "timestamp is not the send time"

    async def test_bodies_are_encoded_and_decoded_by_content_type(
        self, polybus_url: str, polybus_contract_config: ContractConfig
    ) -> None:
        cfg = polybus_contract_config
        async with polybus.connect(polybus_url) as broker:
            topic = _scratch(broker, "codec")
            async with topic.consumer(unique_name("g")) as consumer, topic.producer() as producer:
                await producer.send("héllo")
                await producer.send({"a": [1, 2, None]})
                await producer.send(Model(order=3, item="tea"))
                await producer.send(b"{not json")
                got = await collect(consumer, 4, cfg.receive_timeout)
        assert len(got) == 4
        by_type = collections.defaultdict(list)
        for d in got:
            by_type[d.content_type].append(d)
        assert by_type["text/plain; charset=utf-8"][0].text() == "héllo"
        decoded = sorted((d.json() for d in by_type["application/json"]), key=str)
        assert {"a": [1, 2, None]} in decoded and {"order": 3, "item": "tea"} in decoded
        model = next(d for d in by_type["application/json"] if b"tea" in d.body).decode(Model)
        assert model == Model(order=3, item="tea")
        raw = by_type["application/octet-stream"][0]
        with pytest.raises(polybus.DecodeError):
            raw.json()
        with pytest.raises(polybus.DecodeError):
            raw.decode(Model)

    async def test_send_many_returns_one_unique_id_per_message(
        self, polybus_url: str, polybus_contract_config: ContractConfig
    ) -> None:
        cfg = polybus_contract_config
        n = cfg.count(200)
        async with polybus.connect(polybus_url) as broker:
            topic = _scratch(broker, "many")
            async with topic.consumer(unique_name("g")) as consumer, topic.producer() as producer:
                ids = await producer.send_many([{"i": i} for i in range(n)])
                got = await collect(consumer, n, cfg.receive_timeout + n / 50)
        assert len(ids) == n and len(set(ids)) == n
        assert {d.id for d in got} == set(ids)
        assert sorted(d.json()["i"] for d in got) == list(range(n))

    async def test_topics_are_isolated(
        self, polybus_url: str, polybus_contract_config: ContractConfig
    ) -> None:
        cfg = polybus_contract_config
        async with polybus.connect(polybus_url) as broker:
            a, b = _scratch(broker, "iso-a"), _scratch(broker, "iso-b")
            async with a.consumer("g") as ca, b.consumer("g") as cb, a.producer() as pa, b.producer() as pb:
                await pa.send(b"for a")
                await pb.send(b"for b")
                got_a = await one(ca, cfg.receive_timeout)
                got_b = await one(cb, cfg.receive_timeout)
                await got_a.ack()
                await got_b.ack()
                assert (got_a.body, got_b.body) == (b"for a", b"for b")
                await expect_nothing(ca, cfg.quiet_period)

    # --- groups ------------------------------------------------------------------------------

    async def test_every_group_gets_every_message(
        self, polybus_url: str, polybus_contract_config: ContractConfig
    ) -> None:
        cfg = polybus_contract_config
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
        self, polybus_url: str, polybus_contract_config: ContractConfig
    ) -> None:
        cfg = polybus_contract_config
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
        self, polybus_url: str, polybus_contract_config: ContractConfig
    ) -> None:
        cfg = polybus_contract_config
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
                    await d.ack()
                    if len(counts) == n:
                        done.set()

            async with topic.producer() as producer:
                workers = [asyncio.create_task(work(i, c)) for i, c in enumerate(consumers)]
                await producer.send_many([str(i) for i in range(n)])
                try:
                    await asyncio.wait_for(done.wait(), cfg.receive_timeout + n / 20)
                except TimeoutError:
                    pass
                done.set()
                await asyncio.gather(*workers)
            for c in consumers:
                await c.aclose()
        missing = {str(i).encode() for i in range(n)} - set(counts)
        assert not missing, f"{len(missing)} of {n} messages never arrived"
        assert sum(per_consumer) >= n

    async def test_listener_without_group_sees_messages_while_listening(
        self, polybus_url: str, polybus_contract_config: ContractConfig
    ) -> None:
        cfg = polybus_contract_config
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

    # --- settling ---------------------------------------------------------------------------

    async def test_nack_redelivers_with_attempt_incremented(
        self, polybus_url: str, polybus_contract_config: ContractConfig
    ) -> None:
        cfg = polybus_contract_config
        caps = await _caps(polybus_url)
        async with polybus.connect(polybus_url) as broker:
            topic = _scratch(broker, "nack")
            async with topic.consumer(unique_name("g")) as consumer, topic.producer() as producer:
                sent_id = await producer.send(b"retry me")
                first = await one(consumer, cfg.receive_timeout)
                await first.nack()
                second = await one(consumer, cfg.receive_timeout)
                await second.nack()
                third = await one(consumer, cfg.receive_timeout)
                await third.ack()
                await expect_nothing(consumer, cfg.quiet_period)
        assert first.id == second.id == third.id == sent_id
        assert third.body == b"retry me"
        if caps.delivery_count:
            assert (first.attempt, second.attempt, third.attempt) == (1, 2, 3)

    async def test_nack_with_delay_waits_without_holding_up_others(
        self, polybus_url: str, polybus_contract_config: ContractConfig
    ) -> None:
        cfg = polybus_contract_config
        needs((await _caps(polybus_url)), "delayed_nack")
        delay = cfg.nack_delay
        async with polybus.connect(polybus_url) as broker:
            topic = _scratch(broker, "delay")
            async with topic.consumer(unique_name("g")) as consumer, topic.producer() as producer:
                await producer.send(b"slow")
                first = await one(consumer, cfg.receive_timeout)
                nacked_at = time.monotonic()
                await first.nack(delay=delay)
                await producer.send_many([f"fast-{i}".encode() for i in range(10)])
                fast = await collect(consumer, 10, cfg.receive_timeout)
                fast_done = time.monotonic() - nacked_at
                again = await one(consumer, delay + cfg.receive_timeout)
                waited = time.monotonic() - nacked_at
                await again.ack()
        assert sorted(bodies(fast)) == sorted(f"fast-{i}".encode() for i in range(10)), (
            "messages sent after the nack were held up or mixed with the delayed one"
        )
        assert again.body == b"slow" and again.id == first.id
        assert fast_done < waited
        assert waited >= delay * 0.8, f"redelivered after {waited:.2f}s, before its delay of {delay}s"

    async def test_reject_never_redelivers(
        self, polybus_url: str, polybus_contract_config: ContractConfig
    ) -> None:
        cfg = polybus_contract_config
        async with polybus.connect(polybus_url) as broker:
            topic = _scratch(broker, "reject")
            async with topic.consumer(unique_name("g")) as consumer, topic.producer() as producer:
                await producer.send(b"poison")
                bad = await one(consumer, cfg.receive_timeout)
                await bad.reject()
                await producer.send(b"fine")
                good = await one(consumer, cfg.receive_timeout)
                await good.ack()
                assert good.body == b"fine"
                await expect_nothing(consumer, cfg.quiet_period * 2)

    async def test_settling_twice_raises_delivery_state_error(
        self, polybus_url: str, polybus_contract_config: ContractConfig
    ) -> None:
        cfg = polybus_contract_config
        async with polybus.connect(polybus_url) as broker:
            topic = _scratch(broker, "twice")
            async with topic.consumer(unique_name("g")) as consumer, topic.producer() as producer:
                await producer.send(b"x")
                d = await one(consumer, cfg.receive_timeout)
                await d.ack()
                with pytest.raises(polybus.DeliveryStateError):
                    await d.ack()
                with pytest.raises(polybus.DeliveryStateError):
                    await d.nack()

    async def test_closed_consumer_hands_unacked_back_to_group(
        self, polybus_url: str, polybus_contract_config: ContractConfig
    ) -> None:
        cfg = polybus_contract_config
        caps = await _caps(polybus_url)
        group = unique_name("g")
        async with polybus.connect(polybus_url) as broker:
            topic = _scratch(broker, "close")
            async with topic.consumer(group) as first, topic.producer() as producer:
                await producer.send_many([b"a", b"b", b"c"])
                held = await collect(first, 3, cfg.receive_timeout, ack=False)
                assert len(held) == 3
                # ack the first one received (without a key, arrival order across partitions or
                # shards need not be send order)
                await held[0].ack()
            # closed with two unsettled: a late ack is refused, and both come back
            with pytest.raises(polybus.ClosedError):
                await held[1].ack()
            async with topic.consumer(group) as second:
                again = await collect(second, 2, cfg.receive_timeout * 2)
                await expect_nothing(second, cfg.quiet_period)
        assert sorted(bodies(again)) == sorted(bodies(held[1:]))
        if caps.delivery_count is Support.NATIVE:
            assert all(d.attempt == 2 for d in again)

    async def test_cancelled_handler_task_gets_its_message_redelivered(
        self, polybus_url: str, polybus_contract_config: ContractConfig
    ) -> None:
        cfg = polybus_contract_config
        group = unique_name("g")
        received = asyncio.Event()
        async with polybus.connect(polybus_url) as broker:
            topic = _scratch(broker, "cancel")

            async def handler_task() -> None:
                async with topic.consumer(group) as consumer:
                    await one(consumer, cfg.receive_timeout)
                    received.set()
                    await asyncio.sleep(3600)  # a handler that never finishes

            async with topic.consumer(group):
                pass  # the group exists before the send
            async with topic.producer() as producer:
                await producer.send(b"in progress")
            task = asyncio.create_task(handler_task())
            await asyncio.wait_for(received.wait(), cfg.receive_timeout)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            async with topic.consumer(group) as other:
                again = await one(other, cfg.receive_timeout * 2)
                await again.ack()
        assert again.body == b"in progress"

    async def test_prefetch_bounds_unsettled_deliveries(
        self, polybus_url: str, polybus_contract_config: ContractConfig
    ) -> None:
        cfg = polybus_contract_config
        needs((await _caps(polybus_url)), "competing_consumers")
        group = unique_name("g")
        async with polybus.connect(polybus_url) as broker:
            topic = _scratch(broker, "prefetch")
            async with topic.consumer(group, prefetch=2) as small, topic.producer() as producer:
                await producer.send_many([b"1", b"2", b"3"])
                held = await collect(small, 2, cfg.receive_timeout, ack=False)
                assert len(held) == 2
                assert await small.receive(timeout=cfg.quiet_period) is None, "prefetch=2 handed out a third"
                async with topic.consumer(group) as other:
                    maybe = await other.receive(timeout=cfg.receive_timeout * 2)
                    if maybe is None and cfg.partitioned:
                        # the third may share a partition with a held one, and a partition stays
                        # with its member: it arrives once the held ones are settled
                        for d in held:
                            await d.ack()
                        maybe = await small.receive(timeout=cfg.receive_timeout) or await other.receive(
                            timeout=cfg.receive_timeout
                        )
                    assert maybe is not None, "the third message never reached another member of the group"
                    third = maybe
                    await third.ack()
                for d in held:
                    if not d.settled:
                        await d.ack()
        assert sorted([*bodies(held), third.body]) == [b"1", b"2", b"3"]

    # --- ordering and volume ------------------------------------------------------------------

    async def test_per_key_order_for_a_single_consumer(
        self, polybus_url: str, polybus_contract_config: ContractConfig
    ) -> None:
        cfg = polybus_contract_config
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
        self, polybus_url: str, polybus_contract_config: ContractConfig
    ) -> None:
        cfg = polybus_contract_config
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
        self, polybus_url: str, polybus_contract_config: ContractConfig
    ) -> None:
        cfg = polybus_contract_config
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

    async def test_producer_close_waits_for_sends_under_way(
        self, polybus_url: str, polybus_contract_config: ContractConfig
    ) -> None:
        cfg = polybus_contract_config
        n = cfg.count(100)
        async with polybus.connect(polybus_url) as broker:
            topic = _scratch(broker, "flush")
            async with topic.consumer(unique_name("g")) as consumer:
                producer = topic.producer()
                await producer.open()
                sends = [asyncio.create_task(producer.send(str(i))) for i in range(n)]
                await asyncio.sleep(0)  # let the sends start
                await producer.aclose()
                results = await asyncio.gather(*sends, return_exceptions=True)
                confirmed = [r for r in results if isinstance(r, str)]
                refused = [r for r in results if not isinstance(r, str)]
                assert all(isinstance(r, polybus.ClosedError) for r in refused), refused[:3]
                assert confirmed, "aclose() did not let the sends under way finish"
                got = await collect(consumer, len(confirmed), cfg.receive_timeout + n / 20)
                with pytest.raises(polybus.ClosedError):
                    await producer.send(b"after close")
        assert {d.id for d in got} == set(confirmed)

    # --- errors and limits --------------------------------------------------------------------

    async def test_oversized_message_raises_typed_error_and_sends_nothing(
        self, polybus_url: str, polybus_contract_config: ContractConfig
    ) -> None:
        cfg = polybus_contract_config
        async with polybus.connect(polybus_url) as broker:
            limit = broker.capabilities.max_message_size
            if limit is None:
                pytest.skip("broker declares no maximum message size")
            topic = _scratch(broker, "big")
            async with topic.consumer(unique_name("g")) as consumer, topic.producer() as producer:
                with pytest.raises(polybus.MessageTooLargeError) as info:
                    await producer.send(b"x" * (limit + 1))
                assert info.value.limit == limit
                with pytest.raises(polybus.MessageTooLargeError):
                    await producer.send_many([b"small", b"x" * (limit + 1)])
                await producer.send(b"after")
                got = await one(consumer, cfg.receive_timeout)
                await got.ack()
                assert got.body == b"after"
                await expect_nothing(consumer, cfg.quiet_period)

    async def test_unencodable_body_and_bad_headers_raise_encode_error(self, polybus_url: str) -> None:
        async with (
            polybus.connect(polybus_url) as broker,
            _scratch(broker, "enc").producer() as producer,
        ):
            with pytest.raises(polybus.EncodeError):
                await producer.send(object())
            with pytest.raises(polybus.EncodeError):
                await producer.send(b"x", headers={"n": 1})  # type: ignore[dict-item]

    async def test_topic_lifecycle_and_missing_topic_errors(
        self, polybus_url: str, polybus_contract_config: ContractConfig
    ) -> None:
        async with polybus.connect(polybus_url) as broker:
            topic = _scratch(broker, "life")
            with pytest.raises(polybus.NotFoundError):
                await topic.stats()
            await topic.ensure()
            await topic.ensure()  # idempotent
            stats = await topic.stats()
            assert stats.topic == topic.name
            await topic.delete()
            with pytest.raises(polybus.NotFoundError):
                await topic.stats()
            with pytest.raises(polybus.NotFoundError):
                await topic.delete()
            with pytest.raises(polybus.ConfigurationError):
                broker.topic("no spaces or dots.allowed here")

    async def test_stats_report_backlog_per_group(
        self, polybus_url: str, polybus_contract_config: ContractConfig
    ) -> None:
        cfg = polybus_contract_config
        needs((await _caps(polybus_url)), "backlog_stats")
        async with polybus.connect(polybus_url) as broker:
            topic = _scratch(broker, "stats")
            group = unique_name("g")
            async with topic.consumer(group):
                pass
            async with topic.producer() as producer:
                await producer.send_many([b"1", b"2", b"3", b"4", b"5"])
            deadline = time.monotonic() + cfg.receive_timeout
            while True:  # some brokers count asynchronously
                stats = await topic.stats()
                backlog = stats.groups[group].backlog
                if backlog == 5 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)
            assert backlog == 5, stats
            async with topic.consumer(group) as consumer:
                got = await collect(consumer, 5, cfg.receive_timeout)
            assert len(got) == 5
            deadline = time.monotonic() + cfg.receive_timeout
            while True:
                backlog = (await topic.stats()).groups[group].backlog
                if backlog == 0 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)
            assert backlog == 0

    async def test_closed_objects_refuse_use(self, polybus_url: str) -> None:
        broker = polybus.connect(polybus_url)
        async with broker:
            topic = _scratch(broker, "closed")
            producer = topic.producer()
            consumer = topic.consumer(unique_name("g"))
            await producer.open()
            await consumer.open()
        # closing the broker closed its producer and consumer; every close is idempotent
        await broker.aclose()
        await producer.aclose()
        await consumer.aclose()
        with pytest.raises(polybus.ClosedError):
            await producer.send(b"x")
        with pytest.raises(polybus.ClosedError):
            await consumer.receive(timeout=0.1)
        with pytest.raises(polybus.ClosedError):
            broker.topic("anything")

    async def test_unreachable_broker_raises_connection_error_without_password(
        self, polybus_url: str
    ) -> None:
        parts = urllib.parse.urlsplit(polybus_url)
        if not parts.hostname:
            pytest.skip("the broker URL has no network address")
        canary = "Canary-Pw-7f3a9"
        user = parts.username or "polybus"
        port = _closed_port()
        bad = parts._replace(netloc=f"{user}:{canary}@127.0.0.1:{port}").geturl()
        broker = polybus.connect(bad)
        assert canary not in repr(broker) and canary not in broker.display_url
        with pytest.raises(polybus.BrokerConnectionError) as info:
            async with asyncio.timeout(60):
                async with broker:
                    await _scratch(broker, "t").ensure()
        chain: BaseException | None = info.value
        while chain is not None:  # nothing in the cause chain shows the password either
            assert canary not in str(chain) and canary not in repr(chain)
            chain = chain.__cause__ or chain.__context__
        await broker.aclose()

    async def test_no_client_library_exception_escapes(
        self, polybus_url: str, polybus_contract_config: ContractConfig
    ) -> None:
        """A tour of failure paths: every error raised is a PolybusError (or a documented ValueError)."""
        cfg = polybus_contract_config
        async with polybus.connect(polybus_url) as broker:
            topic = _scratch(broker, "errs")
            missing = _scratch(broker, "missing")
            for operation in (missing.stats, missing.delete):
                with pytest.raises(polybus.PolybusError):
                    await operation()
            async with topic.consumer(unique_name("g")) as consumer, topic.producer() as producer:
                await producer.send(b"x")
                d = await one(consumer, cfg.receive_timeout)
                await d.ack()
                for settle in (d.ack, d.reject):
                    with pytest.raises(polybus.PolybusError):
                        await settle()
                with pytest.raises(ValueError):
                    await (await _fresh(producer, consumer, cfg)).nack(delay=-1)
        with pytest.raises(polybus.PolybusError):
            polybus.connect("nosuchscheme://x")


async def _fresh(producer: polybus.Producer, consumer: polybus.Consumer, cfg: ContractConfig) -> Delivery:
    await producer.send(b"y")
    return await one(consumer, cfg.receive_timeout)


async def _caps(url: str) -> Capabilities:
    broker = polybus.connect(url)
    try:
        return broker.capabilities
    finally:
        await broker.aclose()


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port  # closed again: nothing listens there
