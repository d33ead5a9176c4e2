"""The private aiokafka attributes of ``_compat``: there with this aiokafka, and each fallback works.

The first test of each pair fails when an aiokafka upgrade removes what the fast or exact path
needs; the second passes an object without it and checks the fallback.
"""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka.protocol.admin import DeleteGroupsRequest
from polybus_kafka import KafkaBroker, _producer
from polybus_kafka._compat import (
    CompatError,
    coordinator_send,
    fast_append,
    forget_topics,
    member_of,
    set_record_count,
    track_topic,
)

import polybus
from polybus.testing import unique_name
from polybus.testing.contract import collect


class _PublicBatch:
    """A batch with aiokafka's public ``append`` only."""

    def __init__(self) -> None:
        self.records: list[tuple[Any, ...]] = []

    def append(self, *, key: Any, value: Any, timestamp: Any, headers: Any) -> object:
        self.records.append((key, value, timestamp, headers))
        return object()


async def test_this_aiokafka_has_the_private_attributes(polybus_url: str) -> None:
    async with polybus.connect(polybus_url) as broker:
        assert isinstance(broker, KafkaBroker)
        batch = broker.producer.create_batch()
        assert fast_append(batch) is not None
        topic = broker.topic(unique_name("compat"))
        group = unique_name("g")
        async with topic.consumer(group) as consumer, topic.producer():
            member, generation = member_of(consumer._client)  # type: ignore[attr-defined]
            assert member is not None and generation >= 0
        gid = f"{topic.name}.{group}"
        response = await coordinator_send(broker.admin.client, gid, DeleteGroupsRequest([gid]))
        assert [name for name, _code in response.results] == [gid]
        assert track_topic(broker.producer, topic.name)
        assert topic.name in broker.producer.client._topics
        assert forget_topics(broker.producer, [topic.name])
        assert topic.name not in broker.producer.client._topics


def test_fallbacks_where_the_attributes_are_missing() -> None:
    batch = _PublicBatch()
    assert fast_append(batch) is None
    set_record_count(batch, 3)  # nothing to correct: the public append counts itself
    assert member_of(object()) == (None, -1)
    assert not forget_topics(object(), ["t"])
    assert not track_topic(object(), "t")


async def test_coordinator_send_without_an_inner_client_raises_compat_error() -> None:
    with pytest.raises(CompatError):
        await coordinator_send(object(), "g", DeleteGroupsRequest(["g"]))


async def test_send_many_through_the_public_batch_append(
    polybus_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_producer, "fast_append", lambda batch: None)
    async with polybus.connect(polybus_url, partitions=2, max_batch_size=1024) as broker:
        topic = broker.topic(unique_name("public"))
        async with topic.consumer(unique_name("g")) as consumer, topic.producer() as producer:
            await producer.send_many([b"%03d" % i + b"." * 97 for i in range(30)])
            await producer.send_many([polybus.Message(body=b"m", key="k", headers={"h": "v"})] * 2)
            got = await collect(consumer, 32, 20)
        assert sorted(d.body[:3] for d in got if d.body != b"m") == [b"%03d" % i for i in range(30)]
        assert [d.headers["h"] for d in got if d.body == b"m"] == ["v", "v"]
