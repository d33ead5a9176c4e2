"""An SQS receive through an outage longer than the reconnect policy raises, and recovers after.

A killed consumer process, sends during an outage and secrets on a failed connect are contract cases.
"""

from __future__ import annotations

import time

import pytest

import polybus
from polybus.testing import TcpRelay, unique_name

pytestmark = pytest.mark.polybus(timeout=90)


async def test_a_receive_raises_once_the_outage_outlasts_the_reconnect_policy(polybus_url: str) -> None:
    async with TcpRelay(polybus_url) as proxy:
        url = proxy.url + "&reconnect_initial=0.1&reconnect_maximum=0.2&reconnect_give_up_after=1.5"
        async with polybus.connect(url) as broker:
            topic = broker.topic(unique_name("giveup"))
            async with topic.consumer(unique_name("g")) as consumer:
                assert await consumer.receive(timeout=0.1) is None
                await proxy.stop()
                started = time.monotonic()
                with pytest.raises(polybus.BrokerConnectionError):
                    while time.monotonic() - started < 20:
                        await consumer.receive(timeout=1)
                assert time.monotonic() - started < 10
                await proxy.start()
                assert await consumer.receive(timeout=0.5) is None  # the endpoint is back: no error
            await topic.delete()
