import pytest

from polybus.testing.plugin import broker_url


@pytest.fixture(scope="session")
def polybus_url() -> str:
    return broker_url("redis")
