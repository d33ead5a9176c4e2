"""Fixtures of the redis adapter's tests: the broker URL (found or skipped) and the contract knobs."""

import pytest

from polybus.testing.contract import ContractConfig
from polybus.testing.plugin import broker_url


@pytest.fixture(scope="session")
def polybus_url() -> str:
    return broker_url("redis")


@pytest.fixture(scope="session")
def polybus_contract_config() -> ContractConfig:
    """A listener's ``XREAD`` of a deleted stream just waits: nothing tells it the topic is gone.
    A one-second visibility timeout, looked at five times a second, is the lease of the resilience cases."""
    return ContractConfig(
        listener_sees_deletion=False,
        lease=1.0,
        lease_options={"visibility_timeout": 1, "claim_interval": 0.2},
    )
