"""The polybus contract suite against a real RabbitMQ."""

from polybus.testing.contract import BrokerContract


class TestContract(BrokerContract):
    """Every case of the suite; none is skipped that the adapter's capabilities claim."""
