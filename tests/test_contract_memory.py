"""The contract suite on the in-memory broker: it must pass whole, with nothing it claims skipped."""

import pytest

from polybus.testing.contract import BrokerContract


@pytest.fixture(scope="session")
def polybus_url() -> str:
    return "memory://"


class TestMemoryContract(BrokerContract):
    pass
