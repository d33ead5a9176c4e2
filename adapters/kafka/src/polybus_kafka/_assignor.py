"""``BusyAwareAssignor``: a Kafka partition assignor that leaves busy partitions where they are.

When a member joins or leaves, Kafka reassigns partitions. A partition moved away from a member
that still holds unsettled deliveries of it is re-read by its new owner from the last commit, so
those deliveries are duplicated. Each member therefore announces, in its join metadata, the
partitions it holds unsettled work on; the group leader keeps those with their holder and spreads
the rest evenly, topic by topic. Imports aiokafka only.
"""

from __future__ import annotations

import collections
import json
from collections.abc import Callable, Iterable, Mapping

from aiokafka.cluster import ClusterMetadata
from aiokafka.coordinator.assignors.abstract import AbstractPartitionAssignor
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment, ConsumerProtocolMemberMetadata

__all__ = ["BusyAwareAssignor"]


class BusyAwareAssignor(AbstractPartitionAssignor):  # type: ignore[misc]
    """Assignor for one consumer; ``busy()`` lists the ``(topic, partition)`` pairs it holds work on."""

    name = "polybus-busy-aware"
    version = 0

    def __init__(self, busy: Callable[[], Iterable[tuple[str, int]]]) -> None:
        self._busy = busy
        self.last_metadata: ConsumerProtocolMemberMetadata | None = None
        """What the last JoinGroup of this consumer announced."""

    def metadata(self, topics: Iterable[str]) -> ConsumerProtocolMemberMetadata:
        busy = sorted([t, p] for t, p in self._busy())
        self.last_metadata = ConsumerProtocolMemberMetadata(
            self.version, sorted(topics), json.dumps(busy).encode()
        )
        return self.last_metadata

    def on_assignment(self, assignment: ConsumerProtocolMemberAssignment) -> None:
        pass

    def assign(
        self, cluster: ClusterMetadata, members: Mapping[str, ConsumerProtocolMemberMetadata]
    ) -> dict[str, ConsumerProtocolMemberAssignment]:
        owner: dict[tuple[str, int], str] = {}
        for member_id in sorted(members):
            for topic, partition in _decode(members[member_id].user_data):
                if topic in members[member_id].subscription:
                    owner.setdefault((topic, partition), member_id)
        result: dict[str, dict[str, list[int]]] = {m: collections.defaultdict(list) for m in members}
        totals = collections.Counter({m: 0 for m in members})
        topics = sorted({t for meta in members.values() for t in meta.subscription})
        for topic in topics:
            partitions = sorted(cluster.partitions_for_topic(topic) or ())
            subscribers = sorted(m for m in members if topic in members[m].subscription)
            counts = collections.Counter({m: 0 for m in subscribers})
            free = []
            for partition in partitions:
                holder = owner.get((topic, partition))
                if holder is not None:
                    result[holder][topic].append(partition)
                    counts[holder] += 1
                    totals[holder] += 1
                else:
                    free.append(partition)
            for partition in free:
                member = min(subscribers, key=lambda m: (counts[m], totals[m], m))
                result[member][topic].append(partition)
                counts[member] += 1
                totals[member] += 1
        return {
            m: ConsumerProtocolMemberAssignment(
                self.version, sorted((t, sorted(ps)) for t, ps in a.items()), b""
            )
            for m, a in result.items()
        }


def _decode(user_data: bytes | None) -> list[tuple[str, int]]:
    try:
        return [(str(t), int(p)) for t, p in json.loads(user_data or b"[]")]
    except (ValueError, TypeError):
        return []  # a member of another client: it claims nothing
