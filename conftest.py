"""Shared by every test directory (tests, adapters, patterns), so it runs in every pytest process:
``python3 dev.py test`` runs several (pytest-xdist workers), and each runs tests of every directory.

After the session, it deletes the RabbitMQ group queues and topics the tests declared in this
process (whichever directory they are in). Quorum queues hold memory on the server even when idle;
the shared local broker should not collect hundreds of them over repeated runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Iterator

import pytest

from polybus.testing import provision


@pytest.fixture(scope="session", autouse=True)
def _delete_declared_rabbitmq_queues() -> Iterator[None]:
    yield
    topic = sys.modules.get("polybus_rabbitmq._topic")
    if topic is None or not topic._KNOWN_GROUPS:
        return
    try:
        url = provision.acquire("rabbitmq").url  # cached: the broker this process's tests used
    except provision.BrokerUnavailable:
        return
    asyncio.run(_delete_known(url, topic._KNOWN_GROUPS))


async def _delete_known(url: str, known: dict[tuple[str, int, str, str], set[str]]) -> None:
    import aio_pika
    from polybus_rabbitmq._wire import group_queue_name

    try:
        connection = await aio_pika.connect(url)
    except Exception:
        return
    try:
        for (_, _, _, topic), groups in list(known.items()):
            for group in groups:
                with contextlib.suppress(Exception):
                    async with connection.channel() as channel:
                        await channel.queue_delete(group_queue_name(topic, group), if_unused=False)
            with contextlib.suppress(Exception):
                async with connection.channel() as channel:
                    await channel.exchange_delete(topic)
    finally:
        await connection.close()
