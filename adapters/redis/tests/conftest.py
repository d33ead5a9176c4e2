"""Fixtures of the redis adapter's tests: the broker URL (found or skipped) and the contract knobs."""

import pytest

from polybus.testing.contract import ContractConfig
from polybus.testing.plugin import broker_url


@pytest.fixture(scope="session")
def polybus_url() -> str:
    return broker_url("redis")


@pytest.fixture(scope="session")
def polybus_contract_config() -> ContractConfig:
    """A listener's ``XREAD`` of a deleted stream just waits: nothing tells it the topic is gone."""
    return ContractConfig(listener_sees_deletion=False)
