"""The polybus contract suite against SQS (SNS topics, SQS queues), with the message counts scaled down."""

from __future__ import annotations

from polybus.testing.contract import BrokerContract


class TestContract(BrokerContract):
    pass
