"""``_compat``: what the adapter reads beyond the client libraries' abc, and each fallback, forced.

The stand-ins below are plain objects shaped like a client version that lacks the attribute; the
end-to-end cases swap a fallback in and run it against the real broker.
"""

from __future__ import annotations

import logging
import types

import aio_pika
import aiormq
import polybus_rabbitmq._broker as broker_module
import polybus_rabbitmq._producer as producer_module
import pytest
from polybus_rabbitmq import _compat

import polybus
from polybus.testing import free_port, unique_name

pytestmark = pytest.mark.polybus(timeout=60)


def test_the_installed_aiormq_publishes_without_a_drain_per_message() -> None:
    # If this fails after an upgrade, sends still work (one drain each): see the fallback below.
    assert _compat.PUBLISH_NO_DRAIN == {"wait": False}
    assert _compat.no_drain_options(aiormq.Channel.basic_publish) == {"wait": False}


def test_no_drain_fallback_when_basic_publish_has_no_wait_or_no_signature() -> None:
    async def basic_publish(body: bytes, *, exchange: str = "", routing_key: str = "") -> None: ...

    assert _compat.no_drain_options(basic_publish) == {}
    assert _compat.no_drain_options(type) == {}  # no signature to read


def _connection(underlay: object) -> object:
    """Shaped like an aio-pika connection: ``transport.connection`` is the aiormq one."""
    return types.SimpleNamespace(transport=types.SimpleNamespace(connection=underlay))


def test_server_version_fallbacks() -> None:
    assert _compat.server_version(object()) == ()
    assert _compat.server_version(types.SimpleNamespace(transport=None)) == ()
    assert _compat.server_version(_connection(object())) == ()
    with_bytes = types.SimpleNamespace(server_properties={"version": b"3.12.1"})
    assert _compat.server_version(_connection(with_bytes)) == (3, 12, 1)


def test_transport_alive_fallbacks() -> None:
    assert _compat.transport_alive(object()) is True  # cannot tell: is_closed decides
    assert _compat.transport_alive(types.SimpleNamespace(transport=None)) is False
    assert _compat.transport_alive(_connection(object())) is True
    assert _compat.transport_alive(_connection(types.SimpleNamespace(is_closed=True))) is False


async def test_a_real_connection_is_read_without_fallbacks(polybus_url: str) -> None:
    connection = await aio_pika.connect(polybus_url)
    try:
        assert _compat.server_version(connection) >= (3, 8)
        assert _compat.transport_alive(connection) is True
    finally:
        await connection.close()
    assert _compat.transport_alive(connection) is False


async def test_the_adapter_works_on_every_fallback(polybus_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(producer_module, "PUBLISH_NO_DRAIN", {})
    monkeypatch.setattr(broker_module, "server_version", lambda connection: ())
    monkeypatch.setattr(broker_module, "transport_alive", lambda connection: True)
    async with polybus.connect(polybus_url) as broker:
        assert isinstance(broker, broker_module.RabbitBroker) and broker.uses_quorum
        topic = broker.topic(unique_name("compat"))
        async with topic.consumer(unique_name("g")) as consumer, topic.producer() as producer:
            await producer.send_many([b"a", b"b", b"c"])
            got = []
            while len(got) < 3 and (d := await consumer.receive(timeout=10)) is not None:
                got.append(d.body)
                await d.ack()
        assert got == [b"a", b"b", b"c"]
        await topic.delete()


async def test_a_failed_connect_logs_no_error_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    port = free_port()  # nothing listens there
    broker = polybus.connect(f"amqp://guest:guest@127.0.0.1:{port}/", connect_timeout=2)
    with pytest.raises(polybus.BrokerConnectionError):
        await broker.open()
    await broker.aclose()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    # the filter drops that one line only
    logging.getLogger("aiormq.connection").error("something else")
    assert caplog.records[-1].getMessage() == "something else"
