"""The contract suite again in FIFO mode (``fifo=true``): FIFO topics and queues, per-key order,
de-duplication of re-sent ids."""

from __future__ import annotations

import pytest

from polybus.testing.contract import BrokerContract


@pytest.fixture(scope="module")
def polybus_url(polybus_url: str) -> str:
    return f"{polybus_url}{'&' if '?' in polybus_url else '?'}fifo=true"


class TestFifoContract(BrokerContract):
    pass
