import pytest

from polybus.testing.contract import ContractConfig
from polybus.testing.plugin import broker_url


@pytest.fixture(scope="session")
def polybus_url() -> str:
    return broker_url("nats")


@pytest.fixture(scope="session")
def polybus_contract_config() -> ContractConfig:
    return ContractConfig()
