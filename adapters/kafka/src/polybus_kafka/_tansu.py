"""Workarounds for tansu, a Kafka-compatible broker, enabled only on a cluster that is tansu.

tansu differs from Apache Kafka in a few ways polybus must handle (docs/kafka.md, "tansu"):

- ``ListOffsets(latest)`` answers the last record batch's base offset + 1: :meth:`Tansu.read_back`
  reads the last batch to find the real end.
- The first generation of a group is 0, and aiokafka leaves a group only from generation 1 on:
  :meth:`Tansu.stop_member` sends the LeaveGroup itself.
- A leader that leaves while a rebalance is under way stays named leader forever, so the other
  members never get an assignment: a :class:`JoinWatchdog` per group member un-wedges it.
- There is no idempotent producer (``InitProducerId`` fails): ``idempotence`` is off by default.

The broker connection asks :func:`is_tansu` once, from the cluster id its metadata gives (tansu's
is ``tansu_cluster`` unless configured otherwise; the ``tansu`` setting overrides the guess), and
creates a :class:`Tansu` only then: on any other cluster none of this code runs.
Imports aiokafka, polybus and this package's modules.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka import errors as kerrors
from aiokafka.protocol.group import JoinGroupRequest, LeaveGroupRequest

from polybus_kafka._admin import KafkaAdmin
from polybus_kafka._assignor import BusyAwareAssignor
from polybus_kafka._compat import CompatError, member_of
from polybus_kafka._settings import KafkaSettings

__all__ = ["TANSU_CLUSTER_ID", "JoinWatchdog", "Tansu", "is_tansu"]

log = logging.getLogger("polybus.kafka")

TANSU_CLUSTER_ID = "tansu_cluster"
"""The cluster id tansu reports unless started with another one."""


def is_tansu(cluster_id: str | None, setting: bool | None = None) -> bool:
    """Whether the workarounds apply: the ``tansu`` setting if given, else tansu's cluster id."""
    if setting is not None:
        return setting
    return cluster_id == TANSU_CLUSTER_ID


class Tansu:
    """The workarounds one broker connection applies to a tansu cluster."""

    def __init__(self, settings: KafkaSettings, admin: KafkaAdmin) -> None:
        self.settings = settings
        self.admin = admin

    async def read_back(
        self, probe: AIOKafkaConsumer, ends: dict[TopicPartition, int]
    ) -> dict[TopicPartition, int]:
        """Correct ``ends`` (from ``ListOffsets``): read each last batch back; its last record wins."""
        starts = await probe.beginning_offsets(list(ends))
        todo = {tp for tp, end in ends.items() if end > starts.get(tp, 0)}
        if not todo:
            return ends
        ends = dict(ends)
        probe.assign(list(todo))
        for tp in todo:
            probe.seek(tp, ends[tp] - 1)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5.0
        while todo and loop.time() < deadline:
            got = await probe.getmany(*todo, timeout_ms=200)
            for tp, records in got.items():
                if records:
                    ends[tp] = max(ends[tp], records[-1].offset + 1)
                    todo.discard(tp)
        return ends

    async def stop_member(self, client: AIOKafkaConsumer, gid: str) -> None:
        """Stop a group member's client; at generation 0 also leave the group (aiokafka would not)."""
        member, generation = member_of(client)
        with contextlib.suppress(Exception):
            await client.stop()
        if member is not None and generation == 0:
            await self.leave_group(gid, member)

    async def leave_group(self, gid: str, member_id: str) -> None:
        """Tell the coordinator that ``member_id`` left ``gid`` (best effort, errors are logged)."""
        try:
            async with asyncio.timeout(5):
                await self.admin.send_to_coordinator(gid, LeaveGroupRequest(gid, member_id))
        except (kerrors.KafkaError, OSError, TimeoutError, CompatError) as exc:
            log.info("leaving group %s failed: %s", gid, exc)

    async def join_group_as(self, gid: str, member_id: str, metadata: bytes) -> str | None:
        """Send a JoinGroup for ``member_id`` of ``gid``; the leader it names, or None (errors are logged)."""
        s = self.settings
        request = JoinGroupRequest(
            gid,
            s.session_timeout_ms,
            s.rebalance_timeout_ms,
            member_id,
            None,
            "consumer",
            [(BusyAwareAssignor.name, metadata)],
        )
        try:
            async with asyncio.timeout(s.session_timeout_ms / 1000 + s.rebalance_timeout_ms / 1000 + 5):
                response = await self.admin.send_to_coordinator(gid, request)
        except (kerrors.KafkaError, OSError, TimeoutError, CompatError) as exc:
            log.info("joining group %s as %s failed: %s", gid, member_id, exc)
            return None
        if response.error_code != 0:
            error = kerrors.for_code(response.error_code).__name__
            log.info("joining group %s as %s: %s", gid, member_id, error)
            return None
        return str(response.leader_id)

    async def group_members(self, gid: str) -> set[str] | None:
        """Member ids of ``gid`` as its coordinator lists them, or None (errors are logged)."""
        try:
            async with asyncio.timeout(10):
                responses = await self.admin.client.describe_consumer_groups([gid])
            members: set[str] = set()
            for response in responses:
                for group in response.groups:  # (error, id, state, protocol type, protocol, members, ...)
                    if group[0] != 0:
                        return None
                    members.update(str(member[0]) for member in group[5])
        except (kerrors.KafkaError, OSError, TimeoutError, IndexError, TypeError) as exc:
            log.info("describing group %s failed: %r", gid, exc)
            return None
        return members

    def watchdog(
        self,
        gid: str,
        topics: Sequence[str],
        client: Callable[[], AIOKafkaConsumer | None],
        assignor: BusyAwareAssignor,
    ) -> JoinWatchdog:
        """Start watching the joins of one group member (``client()`` gives its current client)."""
        return JoinWatchdog(self, gid, topics, client, assignor)


class JoinWatchdog:
    """Un-wedges a rebalance that waits for a leader that already left.

    tansu keeps naming a leader that left the group while a rebalance was under way, so the other
    members' SyncGroups fail until that leader times out, which it never does: it is no member any
    more. After ``session + rebalance timeout`` without an assignment, this member asks the
    coordinator who leads (a JoinGroup as itself, as aiokafka sends anyway), and if that is no member
    of the group (DescribeGroups), joins once in its name: the coordinator then evicts it after a
    session timeout, as any silent member, and the next join elects a live leader.
    The member calls :meth:`joining` when a rebalance starts and :meth:`joined` when it is assigned.
    """

    def __init__(
        self,
        tansu: Tansu,
        gid: str,
        topics: Sequence[str],
        client: Callable[[], AIOKafkaConsumer | None],
        assignor: BusyAwareAssignor,
    ) -> None:
        self._tansu, self._gid, self._topics = tansu, gid, list(topics)
        self._client, self._assignor = client, assignor
        self.since: float | None = time.monotonic()
        """When the current join began (None: assigned)."""
        self._task = asyncio.create_task(self._watch())

    def joining(self) -> None:
        self.since = time.monotonic()

    def joined(self) -> None:
        self.since = None

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _watch(self) -> None:
        s = self._tansu.settings
        patience = (s.session_timeout_ms + s.rebalance_timeout_ms) / 1000
        while True:
            await asyncio.sleep(min(1.0, patience / 4))
            since = self.since
            if since is None or time.monotonic() - since < patience:
                continue
            try:
                await self._unwedge(time.monotonic() - since)
            except Exception as exc:  # best effort: the join goes on as it is
                log.info("group %s: probing a stuck rebalance failed (%r)", self._gid, exc)
            if self.since is not None:
                self.since = time.monotonic()  # try again after another full wait

    async def _unwedge(self, waited: float) -> None:
        client, metadata = self._client(), self._assignor.last_metadata
        if client is None or metadata is None:
            return
        member, _generation = member_of(client)
        if member is None:
            return
        tansu, gid = self._tansu, self._gid
        # the same metadata as aiokafka's own last JoinGroup: the coordinator sees nothing new
        leader = await tansu.join_group_as(gid, member, metadata.encode())
        if not leader or leader == member or self.since is None:
            return
        members = await tansu.group_members(gid)
        if members is None or leader in members:
            return  # a member: it syncs, or the coordinator evicts it once its session expires
        log.warning(
            "group %s: no assignment after %.0fs, the coordinator names %s leader, which left the group: "
            "joining in its name so that the coordinator evicts it",
            gid,
            waited,
            leader,
        )
        empty = BusyAwareAssignor(lambda: ()).metadata(self._topics)
        await tansu.join_group_as(gid, leader, empty.encode())
