"""Run the contract suite against any broker: ``pytest -p polybus.testing.plugin --pyargs
polybus.testing.test_contract --polybus-url=URL``."""

from polybus.testing.contract import BrokerContract


class TestContract(BrokerContract):
    """The whole suite, against ``--polybus-url`` (default ``memory://``)."""
