"""Per-call option cases: unknown options are refused, ``start="earliest"`` replays where declared."""

from __future__ import annotations

from typing import Any

import pytest

import polybus
from polybus.testing._names import unique_name
from polybus.testing.contract._config import ContractConfig
from polybus.testing.contract._helpers import _scratch, expect_nothing, one

__all__ = ["OptionCases"]


class OptionCases:
    """Mixin of :class:`~polybus.testing.contract.BrokerContract`."""

    async def test_unknown_options_raise_configuration_error_naming_them(self, polybus_url: str) -> None:
        async with polybus.connect(polybus_url) as broker:
            topic = _scratch(broker, "opts")
            with pytest.raises(polybus.ConfigurationError, match="no_such_option"):
                topic.consumer(unique_name("g"), no_such_option=1)
            with pytest.raises(polybus.ConfigurationError, match="no_such_option"):
                topic.consumer(None, no_such_option=1)
            with pytest.raises(polybus.ConfigurationError, match="no_such_option"):
                topic.producer(no_such_option=1)
            bogus: dict[str, Any] = {"start": "bogus"}  # not a Start: typed code could not pass it
            with pytest.raises(polybus.ConfigurationError, match="bogus"):
                topic.consumer(unique_name("g"), **bogus)

    async def test_start_earliest_replays_for_a_new_group_where_replay_is_declared(
        self, polybus_url: str, cfg: ContractConfig
    ) -> None:
        async with polybus.connect(polybus_url) as broker:
            topic = _scratch(broker, "replay")
            if not broker.capabilities.replay:
                with pytest.raises(polybus.UnsupportedCapabilityError):
                    topic.consumer(unique_name("g"), start="earliest")
                return
            async with topic.producer() as producer:
                await producer.send(b"before any group")
                async with (
                    topic.consumer(unique_name("late"), start="earliest") as replaying,
                    topic.consumer(unique_name("new")) as latest,
                ):
                    old = await one(replaying, cfg.receive_timeout)
                    await old.ack()
                    assert old.body == b"before any group"
                    await expect_nothing(latest, cfg.quiet_period)
                    await producer.send(b"after")
                    for consumer in (replaying, latest):
                        d = await one(consumer, cfg.receive_timeout)
                        await d.ack()
                        assert d.body == b"after"
