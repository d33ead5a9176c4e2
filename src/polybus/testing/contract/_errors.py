"""Error cases: message size, encoding, closed objects, unreachable brokers, broker-side failures."""

from __future__ import annotations

import asyncio
import logging
import urllib.parse

import pytest

import polybus
from polybus.testing._names import unique_name
from polybus.testing._provision_local import free_port
from polybus.testing.contract._config import ContractConfig
from polybus.testing.contract._helpers import (
    _fresh,
    _scratch,
    collect,
    expect_nothing,
    one,
    polybus_errors_only,
)

__all__ = ["ErrorCases"]


class ErrorCases:
    """Mixin of :class:`~polybus.testing.contract.BrokerContract`."""

    async def test_oversized_message_raises_typed_error_and_sends_nothing(
        self, polybus_url: str, cfg: ContractConfig
    ) -> None:
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
        self, polybus_url: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        parts = urllib.parse.urlsplit(polybus_url)
        if not parts.hostname:
            pytest.skip("the broker URL has no network address")
        canary = "Canary-Pw-7f3a9"
        user = parts.username or "polybus"
        port = free_port()  # closed again at once: nothing listens there
        bad = parts._replace(netloc=f"{user}:{canary}@127.0.0.1:{port}").geturl()
        caplog.set_level(logging.DEBUG)
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
        assert canary not in caplog.text  # nor in any log record, traceback included

    async def test_misuse_raises_polybus_errors(
        self, polybus_url: str, polybus_contract_config: ContractConfig
    ) -> None:
        """A tour of caller mistakes: every error raised is a PolybusError (or a documented ValueError)."""
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

    async def test_no_client_library_exception_escapes(
        self, polybus_url: str, polybus_contract_config: ContractConfig
    ) -> None:
        """A broker-side failure: the topic is deleted (over another connection) while a consumer holds
        deliveries and a producer sends. Every operation then succeeds or raises a PolybusError."""
        cfg = polybus_contract_config
        bound = cfg.receive_timeout * 2
        outcomes: list[str] = []
        async with polybus.connect(polybus_url) as broker, polybus.connect(polybus_url) as admin:
            topic = _scratch(broker, "errs-gone")
            consumer = topic.consumer(unique_name("g"))
            producer = topic.producer()
            await consumer.open()
            await producer.open()
            await producer.send_many([b"1", b"2", b"3"])
            held = await collect(consumer, 2, cfg.receive_timeout, ack=False)
            assert len(held) == 2
            await admin.topic(topic.name).delete()
            check = polybus_errors_only
            outcomes.append(await check("ack of a held delivery", held[0].ack(), bound))
            outcomes.append(await check("nack of a held delivery", held[1].nack(), bound))
            for i in range(3):
                outcomes.append(await check(f"receive #{i}", consumer.receive(timeout=0.5), bound))
            outcomes.append(await check("stats", topic.stats(), bound))
            outcomes.append(await check("delete", topic.delete(), bound))
            outcomes.append(await check("send", producer.send(b"x"), bound))
            outcomes.append(await check("send_many", producer.send_many([b"y", b"z"]), bound))
            late = topic.consumer(unique_name("g"))
            outcomes.append(await check("a new consumer's receive", late.receive(timeout=0.5), bound))
            outcomes.append(await check("closing the new consumer", late.aclose(), bound))
            outcomes.append(await check("closing the consumer", consumer.aclose(), bound))
            outcomes.append(await check("closing the producer", producer.aclose(), bound))
        print("contract:", "; ".join(outcomes))
