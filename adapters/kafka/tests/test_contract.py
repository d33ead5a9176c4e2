"""The polybus contract suite against Kafka."""

from polybus.testing.contract import BrokerContract


class TestContract(BrokerContract):
    """Every case of the semantic model, on the Kafka broker of ``polybus_url``."""
