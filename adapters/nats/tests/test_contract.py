"""The public contract suite against a real NATS JetStream server."""

from polybus.testing.contract import BrokerContract


class TestContract(BrokerContract):
    """Every case of the suite; nothing overridden."""
