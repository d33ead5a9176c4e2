"""``KafkaAdmin``: topics, consumer groups and log positions, apart from sending and receiving.

One per broker connection, around aiokafka's admin client; it also reads log positions (start and
end offsets) through short-lived consumers, since the admin client has no ListOffsets. Every
method translates aiokafka's errors. Imports aiokafka, polybus and this package's modules.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka import errors as kerrors
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.protocol.admin import DeleteGroupsRequest

from polybus_kafka._compat import CompatError, coordinator_send
from polybus_kafka._errors import translated
from polybus_kafka._settings import KafkaSettings
from polybus_kafka._wire import split_group_id

__all__ = ["KafkaAdmin", "ReadBack"]

log = logging.getLogger("polybus.kafka")
_GROUP_ID_NOT_FOUND = 69  # Kafka error code; aiokafka has no class for it

ReadBack = Callable[[AIOKafkaConsumer, dict[TopicPartition, int]], Awaitable[dict[TopicPartition, int]]]
"""Corrects end offsets a broker answered, reading with the given (started) consumer."""


class KafkaAdmin:
    """Topic and group administration of one broker connection (see the module docstring)."""

    def __init__(self, settings: KafkaSettings, probe: Callable[[], AIOKafkaConsumer]) -> None:
        self.settings = settings
        self.client = AIOKafkaAdminClient(**settings.client_options())
        self._probe = probe
        self.read_back: ReadBack | None = None
        """Set where the broker's end offsets need reading back (tansu)."""

    async def start(self) -> None:
        await self.client.start()

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.client.close()

    async def cluster_id(self) -> str | None:
        """The cluster's id, as its metadata gives it (None if it gives none)."""
        with translated("describing the cluster"):
            cluster = await self.client.describe_cluster()
        value = cluster.get("cluster_id")
        return None if value is None else str(value)

    # -- topics -----------------------------------------------------------------------------------

    async def topic_names(self) -> list[str]:
        with translated(f"listing topics on {self.settings.display_url}"):
            names: list[str] = await self.client.list_topics()
        return names

    async def partitions_of(self) -> dict[str, list[TopicPartition]]:
        """Every topic's partitions, as the cluster's metadata gives them now.

        Fresh, unlike a client's cached metadata (a topic deleted and re-created elsewhere may have
        other partitions), and asked for all topics, so no broker creates one for the asking.
        """
        with translated(f"reading the topics of {self.settings.display_url}"):
            topics = await self.client.describe_topics()
        return {
            str(t["topic"]): sorted(TopicPartition(t["topic"], p["partition"]) for p in t["partitions"])
            for t in topics
            if t["error_code"] == 0
        }

    async def create_topic(self, name: str, partitions: int) -> None:
        """Create ``name`` with ``partitions`` partitions; an existing topic is left as it is."""
        with translated(f"creating topic {name!r}"):
            response = await self.client.create_topics(
                [NewTopic(name, partitions, self.settings.replication_factor)]
            )
            for _topic, code, *rest in response.topic_errors:
                error = kerrors.for_code(code)
                if error not in (kerrors.NoError, kerrors.TopicAlreadyExistsError):
                    raise error(rest[0] if rest else "")

    async def delete_topics(self, names: list[str]) -> None:
        with translated(f"deleting topics {names!r}"):
            await self.client.delete_topics(names)

    # -- groups -----------------------------------------------------------------------------------

    async def groups_of(self, topic: str) -> dict[str, str]:
        """``{polybus group: Kafka group id}`` of the groups on ``topic``."""
        with translated("listing consumer groups"):
            listed = await self.client.list_consumer_groups()
        out = {}
        for gid, *_ in listed:
            group = split_group_id(topic, gid)
            if group is not None:
                out[group] = gid
        return out

    async def delete_groups(self, gids: list[str]) -> None:
        """Delete consumer groups (their committed offsets), so a re-created topic starts clean."""
        with translated("deleting consumer groups"):
            for gid in gids:
                try:
                    response = await coordinator_send(self.client, gid, DeleteGroupsRequest([gid]))
                except CompatError as exc:
                    log.warning("could not delete group %s: %s", gid, exc)
                    continue
                for name, code in response.results:
                    if code not in (0, _GROUP_ID_NOT_FOUND):
                        log.warning("could not delete group %s: %s", name, kerrors.for_code(code).__name__)

    async def committed(self, gid: str, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        """Committed offsets of ``gid`` (partitions without a commit are left out)."""
        with translated(f"reading offsets of group {gid!r}"):
            offsets = await self.client.list_consumer_group_offsets(gid, partitions=tps)
        return {tp: meta.offset for tp, meta in offsets.items() if meta is not None and meta.offset >= 0}

    async def send_to_coordinator(self, gid: str, request: Any) -> Any:
        """Send a group request the admin client has no method for (raises ``CompatError`` if it cannot)."""
        return await coordinator_send(self.client, gid, request)

    # -- log positions ----------------------------------------------------------------------------

    async def start_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        """The offset of the first retained record of each partition."""
        if not tps:
            return {}
        async with self._probing("reading start offsets") as probe:
            return dict(await probe.beginning_offsets(tps))

    async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        """The offset after the last record of each partition, as a consumer will really read it."""
        if not tps:
            return {}
        async with self._probing("reading end offsets") as probe:
            ends: dict[TopicPartition, int] = dict(await probe.end_offsets(tps))
            if self.read_back is not None:
                ends = await self.read_back(probe, ends)
            return ends

    @contextlib.asynccontextmanager
    async def _probing(self, what: str) -> AsyncIterator[AIOKafkaConsumer]:
        """A started probe consumer, its errors translated; stopped on the way out, whatever happens."""
        probe = self._probe()
        try:
            with translated(what):
                await probe.start()
                yield probe
        finally:
            with contextlib.suppress(Exception):
                await probe.stop()
