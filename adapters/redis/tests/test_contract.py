"""The public contract suite, against a real Redis server."""

from polybus.testing.contract import BrokerContract


class TestContract(BrokerContract):
    """Every case of the suite; none is skipped that the redis capabilities claim."""
