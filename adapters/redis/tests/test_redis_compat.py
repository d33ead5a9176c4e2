"""The shim around redis-py's private connection attributes (``_compat``), both ways.

The installed redis-py must still give the adapter its stream reader and writer (an upgrade
that hides them fails here, not silently in production); with the shim answering ``None`` the
adapter falls back to redis-py's public API and still does its whole job.
"""

from __future__ import annotations

import logging

import pytest
from polybus_redis import RedisBroker, _compat

import polybus
from polybus.testing import unique_name


async def test_the_installed_redis_py_gives_its_streams(polybus_url: str) -> None:
    async with polybus.connect(polybus_url) as broker:
        assert isinstance(broker, RedisBroker)
        conn = await broker.pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            assert _compat.streams(conn) is not None
        finally:
            await broker.pool.release(conn)


def test_a_connection_without_streams_takes_the_fallback_with_one_warning(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Hidden:  # what a redis-py that renamed its private attributes would look like
        is_connected = True

    monkeypatch.setattr(_compat, "_warned", False)
    with caplog.at_level(logging.WARNING, logger="polybus.redis"):
        assert _compat.streams(Hidden()) is None  # type: ignore[arg-type]
        assert _compat.streams(Hidden()) is None  # type: ignore[arg-type]
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert "falling back" in caplog.text


async def test_everything_works_through_the_fallback(
    polybus_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_compat, "streams", lambda conn: None)
    async with polybus.connect(polybus_url) as broker:
        topic = broker.topic(unique_name("fallback"))
        group = unique_name("g")
        async with topic.consumer(group) as consumer, topic.producer() as producer:
            ids = await producer.send_many([b"a", b"b", b"c"])
            await producer.send(b"d", headers={"x": "1"}, key="k")
            got = [await consumer.receive(timeout=5) for _ in range(4)]
            assert [d.body for d in got if d is not None] == [b"a", b"b", b"c", b"d"]
            assert [d.id for d in got[:3] if d is not None] == ids
            first, *rest = got
            assert first is not None
            await first.nack()
            for d in rest:
                assert d is not None
                await d.ack()
            again = await consumer.receive(timeout=5)
            assert again is not None and again.id == first.id and again.attempt == 2
            await again.ack()
        stats = (await topic.stats()).groups[group]
        assert (stats.backlog, stats.in_flight) == (0, 0)
        await topic.delete()
