"""The contract suite on the in-memory broker: it must pass whole, with nothing it claims skipped."""

import dataclasses

import pytest

from polybus import Support
from polybus._memory import MemoryBroker
from polybus.testing.contract import BrokerContract
from polybus.testing.contract._helpers import _caps


@pytest.fixture(scope="session")
def polybus_url() -> str:
    return "memory://"


class TestMemoryContract(BrokerContract):
    pass


async def test_the_suite_reads_capabilities_from_an_opened_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    """An adapter may declare its capabilities on connecting (NATS does): the suite sees those."""
    opened = MemoryBroker._open

    async def open_and_refine(self: MemoryBroker) -> None:
        await opened(self)
        self.capabilities = dataclasses.replace(self.capabilities, fan_out=Support.UNSUPPORTED)

    monkeypatch.setattr(MemoryBroker, "_open", open_and_refine)
    assert (await _caps("memory://")).fan_out is Support.UNSUPPORTED
