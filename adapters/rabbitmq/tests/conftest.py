"""Fixtures of the RabbitMQ adapter tests: the broker URL (found or skipped) and a cuttable proxy.

``CutProxy`` sits between a client and RabbitMQ; cutting it closes every proxied socket at once
(what a network failure looks like to the client) while it keeps listening for the reconnect.
"""

from __future__ import annotations

import pytest

from polybus.testing import TcpRelay
from polybus.testing.contract import ContractConfig
from polybus.testing.plugin import broker_url


@pytest.fixture(scope="session")
def polybus_url() -> str:
    """The broker; the queues the tests declare are deleted after the session (the root conftest.py)."""
    return broker_url("rabbitmq")


@pytest.fixture(scope="session")
def polybus_contract_config() -> ContractConfig:
    """A listener's exclusive queue outlives its topic's exchange: nothing tells it the topic is gone."""
    return ContractConfig(listener_sees_deletion=False)


@pytest.fixture
def cut_proxy() -> type[TcpRelay]:
    """``async with cut_proxy(url) as proxy``: ``proxy.url`` goes through it; ``proxy.cut()`` drops all."""
    return TcpRelay
