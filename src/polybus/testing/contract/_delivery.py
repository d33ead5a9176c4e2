"""Publish-and-consume cases: round trip, codecs, send_many, topic isolation, producer close."""

from __future__ import annotations

import asyncio
import collections
import time

import pytest

import polybus
from polybus.testing._names import unique_name
from polybus.testing.contract._config import ContractConfig
from polybus.testing.contract._helpers import Model, _scratch, collect, expect_nothing, one

__all__ = ["DeliveryCases"]


class DeliveryCases:
    """Mixin of :class:`~polybus.testing.contract.BrokerContract`."""

    async def test_roundtrip_keeps_body_headers_key_and_id(
        self, polybus_url: str, cfg: ContractConfig
    ) -> None:
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
        self, polybus_url: str, cfg: ContractConfig
    ) -> None:
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
        self, polybus_url: str, cfg: ContractConfig
    ) -> None:
        n = cfg.count(200)
        async with polybus.connect(polybus_url) as broker:
            topic = _scratch(broker, "many")
            async with topic.consumer(unique_name("g")) as consumer, topic.producer() as producer:
                ids = await producer.send_many([{"i": i} for i in range(n)])
                got = await collect(consumer, n, cfg.receive_timeout + n / 50)
        assert len(ids) == n and len(set(ids)) == n
        assert {d.id for d in got} == set(ids)
        assert sorted(d.json()["i"] for d in got) == list(range(n))

    async def test_topics_are_isolated(self, polybus_url: str, cfg: ContractConfig) -> None:
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

    async def test_producer_close_waits_for_sends_under_way(
        self, polybus_url: str, cfg: ContractConfig
    ) -> None:
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
