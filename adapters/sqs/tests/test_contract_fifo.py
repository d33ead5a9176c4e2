"""The contract suite again in FIFO mode (``fifo=true``): FIFO topics and queues, per-key order."""

from __future__ import annotations

import pytest

from polybus.testing.contract import BrokerContract


@pytest.fixture(scope="module")
def polybus_url(polybus_url: str) -> str:
    return f"{polybus_url}{'&' if '?' in polybus_url else '?'}fifo=true"


class TestFifoContract(BrokerContract):
    pass


@pytest.mark.polybus(timeout=60)
async def test_fifo_drops_a_message_sent_twice_with_the_same_id(polybus_url: str) -> None:
    import polybus
    from polybus.testing import unique_name

    async with polybus.connect(polybus_url) as broker:
        assert broker.capabilities.dedup is polybus.Support.NATIVE
        topic = broker.topic(unique_name("dedup"))
        async with topic.consumer(unique_name("g")) as consumer, topic.producer() as producer:
            message = polybus.Message.of(b"once", key="k")
            await producer.send_many([message])
            await producer.send_many([message])  # a retry after an unclear failure, say
            d = await consumer.receive(timeout=5)
            assert d is not None and d.body == b"once" and d.key == "k"
            await d.ack()
            assert await consumer.receive(timeout=1.5) is None, "the re-sent message was delivered twice"
