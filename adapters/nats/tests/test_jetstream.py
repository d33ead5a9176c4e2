"""NATS-specific behaviour: ack_wait without keep-alive, no client-side drops, header headroom, settings.

Keep-alive past ack_wait, de-duplication and replay are contract cases (polybus.testing.contract).
"""

from __future__ import annotations

import asyncio
import collections

import pytest
from polybus_nats import NatsBroker, NatsSettings

import polybus
from polybus.testing import unique_name, with_options


@pytest.mark.polybus(timeout=60)
async def test_unsettled_delivery_comes_back_after_ack_wait_without_keepalive(polybus_url: str) -> None:
    """The counterpart of the test above: the server does redeliver when nobody keeps it alive."""
    import nats

    async with polybus.connect(with_options(polybus_url, ack_wait=1)) as broker:
        topic = broker.topic(unique_name("expire"))
        group = unique_name("g")
        try:
            assert isinstance(broker, NatsBroker)
            async with topic.consumer(group), topic.producer() as producer:
                pass  # the group exists
            raw = await nats.connect(broker.settings.servers)
            try:
                sub = await raw.jetstream().pull_subscribe_bind(group, stream=topic.name)
                async with topic.producer() as producer:
                    await producer.send(b"abandoned")
                (msg,) = await sub.fetch(1, timeout=10)  # taken by a raw client that never acks
                assert msg.data == b"abandoned"
                async with topic.consumer(group) as consumer:
                    again = await consumer.receive(timeout=10)
                    assert again is not None and again.body == b"abandoned" and again.attempt >= 2
                    await again.ack()
            finally:
                await raw.close()
        finally:
            await topic.delete()


@pytest.mark.polybus(timeout=120)
async def test_slow_consumer_with_large_messages_loses_and_repeats_nothing(polybus_url: str) -> None:
    n, size, prefetch = 120, 512 * 1024, 100  # 60 MB through a consumer holding up to 50 MB
    async with polybus.connect(with_options(polybus_url, storage="memory")) as broker:
        assert isinstance(broker, NatsBroker)
        topic = broker.topic(unique_name("slowc"))
        try:
            async with topic.consumer(unique_name("g"), prefetch=prefetch) as consumer:
                async with topic.producer() as producer:
                    for start in range(0, n, 20):
                        await producer.send_many(
                            [str(i).encode().ljust(size, b".") for i in range(start, start + 20)]
                        )
                seen: collections.Counter[bytes] = collections.Counter()
                held: list[polybus.Delivery] = []
                while len(seen) < n:
                    d = await consumer.receive(timeout=10)
                    assert d is not None, f"stalled after {len(seen)} of {n}"
                    assert d.attempt == 1, f"{d!r} was redelivered"
                    seen[d.body.split(b".", 1)[0]] += 1
                    held.append(d)
                    # what the client holds (handed out, buffered, arrived in its inbox) stays bounded
                    assert consumer.in_flight + len(consumer._arrived) <= prefetch  # type: ignore[attr-defined]
                    if len(held) >= prefetch:  # a slow handler: settle in bursts
                        await asyncio.sleep(0.2)
                        for h in held:
                            await h.ack()
                        held.clear()
                for h in held:
                    await h.ack()
            assert set(seen) == {str(i).encode() for i in range(n)}
            assert max(seen.values()) == 1
            assert broker.slow_consumer_drops == 0
        finally:
            await topic.delete()


@pytest.mark.polybus(timeout=30)
async def test_key_longer_than_the_headroom_raises_too_large_before_sending(polybus_url: str) -> None:
    async with polybus.connect(polybus_url) as broker:
        limit = broker.capabilities.max_message_size
        assert limit is not None
        topic = broker.topic(unique_name("bigkey"))
        try:
            async with topic.producer() as producer:
                with pytest.raises(polybus.MessageTooLargeError):
                    await producer.send(b"x" * (limit - 100), key="k" * 2000)
                await producer.send(b"x" * (limit - 100), key="small")  # the connection is still fine
        finally:
            await topic.delete()


def test_settings_from_url_keep_secrets_secret() -> None:
    s = NatsSettings.from_url(
        "tls://alice:s3cr%40t@example.com:4443?ack_wait=5&storage=memory&tls_verify=false"
    )
    assert s.servers == ["tls://example.com:4443"] and s.uses_tls and not s.tls_verify
    assert s.user == "alice" and s.password is not None and s.password.get_secret_value() == "s3cr@t"
    assert s.ack_wait == 5 and s.storage == "memory"
    assert "s3cr" not in repr(s) and "s3cr" not in str(s)
    token = NatsSettings.from_url("nats://T0ken@h")
    assert token.token is not None and token.user is None and token.servers == ["nats://h:4222"]
    broker = polybus.connect(["nats://alice:Canary-9@h:1", "token_extra=1"][0])
    assert "Canary-9" not in repr(broker) and broker.display_url == "nats://alice:***@h:1"
    with pytest.raises(polybus.ConfigurationError) as info:
        polybus.connect("nats://alice:Canary-9@h:1?ack_wait=-1")
    assert "Canary-9" not in str(info.value)


@pytest.mark.polybus(timeout=60)
async def test_listener_may_start_from_the_earliest_message(polybus_url: str) -> None:
    async with polybus.connect(polybus_url) as broker:
        topic = broker.topic(unique_name("replayl"))
        try:
            async with topic.producer() as producer:
                await producer.send_many([b"1", b"2"])
            async with topic.consumer(start="earliest") as listener, topic.consumer() as latest:
                got = [await listener.receive(timeout=10) for _ in range(2)]
                assert [d.body for d in got if d] == [b"1", b"2"]
                assert await latest.receive(timeout=0.5) is None
        finally:
            await topic.delete()


async def test_max_message_size_setting_below_max_payload_is_the_limit(polybus_url: str) -> None:
    async with polybus.connect(polybus_url, max_message_size=1000) as broker:
        assert broker.capabilities.max_message_size == 1000
        topic = broker.topic(unique_name("small"))
        try:
            async with topic.producer() as producer:
                with pytest.raises(polybus.MessageTooLargeError):
                    await producer.send(b"x" * 1001)
                await producer.send(b"x" * 900)
        finally:
            await topic.delete()


async def test_reconnect_delays_follow_the_policy_and_restart_after_each_disconnect() -> None:
    policy = polybus.ReconnectPolicy(initial=0.1, multiplier=2, maximum=0.3, jitter=0, max_attempts=4)
    broker = NatsBroker(NatsSettings(reconnect=policy))
    delays = []
    for _ in range(2):
        await broker._on_disconnected()
        delays.append([broker._next_server([], {})[1] for _ in range(5)])
    # max_attempts=4 gives 3 delays; after them a connection keeps trying every `maximum` seconds
    assert delays == [[0.1, 0.2, 0.3, 0.3, 0.3]] * 2
