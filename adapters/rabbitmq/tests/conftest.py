"""Fixtures of the RabbitMQ adapter tests: the broker URL (found or skipped) and a cuttable proxy.

``CutProxy`` sits between a client and RabbitMQ; cutting it closes every proxied socket at once
(what a network failure looks like to the client) while it keeps listening for the reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import pytest

from polybus.testing import TcpRelay
from polybus.testing.contract import ContractConfig
from polybus.testing.plugin import broker_url

_URLS: list[str] = []


@pytest.fixture(scope="session")
def polybus_url() -> str:
    url = broker_url("rabbitmq")
    _URLS.append(url)
    return url


@pytest.fixture(scope="session")
def polybus_contract_config() -> ContractConfig:
    """A listener's exclusive queue outlives its topic's exchange: nothing tells it the topic is gone."""
    return ContractConfig(listener_sees_deletion=False)


@pytest.fixture(scope="session", autouse=True)
def _delete_declared_queues() -> Iterator[None]:
    """After the session, delete the group queues and topics the tests declared in this process.

    Quorum queues hold memory on the server even when idle; a local broker should not collect
    hundreds of them over repeated runs.
    """
    yield
    if _URLS:
        asyncio.run(_delete_known(_URLS[0]))


async def _delete_known(url: str) -> None:
    import aio_pika
    from polybus_rabbitmq._topic import _KNOWN_GROUPS
    from polybus_rabbitmq._wire import group_queue_name

    try:
        connection = await aio_pika.connect(url)
    except Exception:
        return
    try:
        for (_, _, _, topic), groups in list(_KNOWN_GROUPS.items()):
            for group in groups:
                with contextlib.suppress(Exception):
                    async with connection.channel() as channel:
                        await channel.queue_delete(group_queue_name(topic, group), if_unused=False)
            with contextlib.suppress(Exception):
                async with connection.channel() as channel:
                    await channel.exchange_delete(topic)
    finally:
        await connection.close()


@pytest.fixture
def cut_proxy() -> type[TcpRelay]:
    """``async with cut_proxy(url) as proxy``: ``proxy.url`` goes through it; ``proxy.cut()`` drops all."""
    return TcpRelay
