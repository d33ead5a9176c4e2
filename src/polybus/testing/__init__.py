"""polybus.testing: the public contract suite, its pytest plugin, and broker provisioning.

    # in an adapter's tests/test_contract.py
    from polybus.testing.contract import BrokerContract

    class TestMyBroker(BrokerContract):
        pass   # with a ``polybus_url`` fixture in conftest.py

Run against any URL: ``pytest -p polybus.testing.plugin --pyargs polybus.testing.test_contract
--polybus-url=redis://localhost:6379``. This package may import pytest; the core must not import it.
"""

from polybus.testing._broker_process import BrokerProcess
from polybus.testing._faults import FaultInjector, RelayFaults
from polybus.testing._ledger import Ledger, LedgerReport
from polybus.testing._names import unique_name
from polybus.testing._provision_local import NotStartable, free_port
from polybus.testing._relay import TcpRelay
from polybus.testing._stream import run_stream
from polybus.testing._tansu_faults import TansuRelayFaults
from polybus.testing._urls import with_options

__all__ = [
    "BrokerProcess",
    "FaultInjector",
    "Ledger",
    "LedgerReport",
    "NotStartable",
    "RelayFaults",
    "TansuRelayFaults",
    "TcpRelay",
    "free_port",
    "run_stream",
    "unique_name",
    "with_options",
]
