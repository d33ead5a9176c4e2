"""The polybus contract suite: the semantic model of DESIGN.md, checked against any broker.

Use it from an adapter's tests::

    # tests/conftest.py                         # tests/test_contract.py
    @pytest.fixture(scope="session")            from polybus.testing.contract import BrokerContract
    def polybus_url() -> str:
        return broker_url("redis")              class TestContract(BrokerContract):
                                                    pass

or against any URL: ``pytest -p polybus.testing.plugin --pyargs polybus.testing.test_contract
--polybus-url=nats://localhost:4222``.

Every case opens its own broker and uses fresh topic and group names. Cases that a broker's
declared capabilities do not cover are skipped with the reason. A broker that is slow (SQS
emulators) may override the ``polybus_contract_config`` fixture to scale message counts down; the
semantics checked stay the same and the scaling is printed in the test output.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from polybus.testing.contract._cancel import CancelCases
from polybus.testing.contract._config import ContractConfig
from polybus.testing.contract._delivery import DeliveryCases
from polybus.testing.contract._errors import ErrorCases
from polybus.testing.contract._group_send import GroupSendCases
from polybus.testing.contract._groups import GroupCases
from polybus.testing.contract._helpers import (
    _SCRATCH,
    _delete_topics,
    bodies,
    collect,
    expect_nothing,
    needs,
    one,
)
from polybus.testing.contract._options import OptionCases
from polybus.testing.contract._reply import ReplyCases
from polybus.testing.contract._resilience import ResilienceCases
from polybus.testing.contract._secrets import SecretCases
from polybus.testing.contract._settle import SettleCases
from polybus.testing.contract._topics import TopicCases
from polybus.testing.contract._volume import VolumeCases

__all__ = ["BrokerContract", "ContractConfig", "bodies", "collect", "expect_nothing", "needs", "one"]


@pytest.mark.polybus(timeout=240)
class BrokerContract(
    DeliveryCases,
    GroupCases,
    GroupSendCases,
    SettleCases,
    CancelCases,
    VolumeCases,
    TopicCases,
    OptionCases,
    ErrorCases,
    ResilienceCases,
    SecretCases,
    ReplyCases,
):
    """Subclass in a test module; provide a ``polybus_url`` fixture (the plugin has a default)."""

    @pytest.fixture
    def cfg(self, polybus_contract_config: ContractConfig) -> ContractConfig:
        """The broker's knobs (its ``polybus_contract_config`` fixture), under a short name."""
        return polybus_contract_config

    @pytest.fixture(autouse=True)
    def _delete_scratch_topics(self, polybus_url: str) -> Iterator[None]:
        _SCRATCH.clear()
        yield
        names = list(_SCRATCH)
        _SCRATCH.clear()
        if names:
            try:
                asyncio.run(asyncio.wait_for(_delete_topics(polybus_url, names), 60))
            except Exception as exc:  # cleanup must never turn a result into an error
                print(f"contract: could not delete scratch topics {names}: {exc!r}")
