"""The switch of the tansu workarounds (``_tansu.py``), on each side, and the producer's log.

The workarounds themselves are tested in ``test_broker_quirks.py`` (each passes on Kafka too).
"""

from __future__ import annotations

import logging

import pytest
from polybus_kafka import KafkaBroker, _broker
from polybus_kafka._tansu import TANSU_CLUSTER_ID, is_tansu

import polybus
from polybus.testing import unique_name


def test_the_switch_follows_the_cluster_id_unless_set() -> None:
    assert is_tansu(TANSU_CLUSTER_ID)
    for other in ("MkU3OEVBNTcwNTJENDM2Qk", "", None):  # Apache Kafka's ids are random base64
        assert not is_tansu(other)
    assert not is_tansu(TANSU_CLUSTER_ID, setting=False)
    assert is_tansu("MkU3OEVBNTcwNTJENDM2Qk", setting=True)


async def _workarounds(url: str, **options: object) -> tuple[bool, bool, bool]:
    """Whether the broker has the workarounds, reads end offsets back, a member has a watchdog."""
    async with polybus.connect(url, **options) as broker:
        assert isinstance(broker, KafkaBroker)
        async with broker.topic(unique_name("switch")).consumer(unique_name("g")) as consumer:
            watchdog = consumer._watchdog is not None  # type: ignore[attr-defined]
        return broker.tansu is not None, broker.admin.read_back is not None, watchdog


async def test_workarounds_are_created_on_tansu_only(polybus_url: str) -> None:
    async with polybus.connect(polybus_url) as broker:
        assert isinstance(broker, KafkaBroker)
        on_tansu = await broker.admin.cluster_id() == TANSU_CLUSTER_ID
    assert await _workarounds(polybus_url) == (on_tansu,) * 3
    assert await _workarounds(polybus_url, tansu=False) == (False, False, False)
    assert await _workarounds(polybus_url, tansu=True) == (True, True, True)


async def test_starting_producers_logs_no_error(
    polybus_url: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # tansu has no idempotent producer: aiokafka logs "Unexpected error during InitProducerIdRequest"
    # at error level, a condition the adapter handles (it sends without); on tansu it does not ask,
    # elsewhere that record is lowered to info while it tries
    caplog.set_level(logging.INFO)
    for options in ({}, {"tansu": False}):
        monkeypatch.setattr(_broker, "_IDEMPOTENCE", {})  # try again, as a new process would
        async with polybus.connect(polybus_url, **options) as broker:
            topic = broker.topic(unique_name("quiet"))
            async with topic.producer() as producer:
                await producer.send(b"x")
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]
