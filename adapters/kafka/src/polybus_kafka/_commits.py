"""``Committer``: commits a group member's settled offsets in the background, coalesced.

Kafka commits a position per partition; each assigned partition's ``PartitionTracker`` knows how
far its settled prefix reaches. Acks set ``dirty``; the committer's task then waits
``commit_interval`` (the acks of that interval join) and commits every partition whose prefix
moved, in one request. A commit the broker refuses is retried: it surfaces as a redelivery, never
as an error. A rebalance and closing commit at once (:meth:`Committer.commit`). Imports aiokafka and
this package's modules.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka import errors as kerrors

from polybus_kafka._offsets import PartitionTracker

__all__ = ["Committer"]

log = logging.getLogger("polybus.kafka")


class Committer:
    """Commits the settled prefix of the partitions in ``trackers`` (the member's own dict, live)."""

    def __init__(
        self,
        trackers: dict[TopicPartition, PartitionTracker],
        client: Callable[[], AIOKafkaConsumer | None],
        interval: float,
    ) -> None:
        self._trackers, self._client, self._interval = trackers, client, interval
        self.dirty = asyncio.Event()
        """Set when a commit point moved: the task commits ``interval`` later."""
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            await self.dirty.wait()
            await asyncio.sleep(self._interval)  # coalesce the acks of this interval into one commit
            self.dirty.clear()
            if not await self.commit():
                self.dirty.set()
                await asyncio.sleep(0.5)

    async def commit(self) -> bool:
        """Commit each partition's contiguous settled prefix; False if the broker refused."""
        client = self._client()
        if client is None:
            return True
        async with self._lock:
            offsets = {tp: t.commit_point for tp, t in self._trackers.items() if t.alive and t.dirty}
            if not offsets:
                return True
            try:
                await client.commit(offsets)
            except (kerrors.KafkaError, kerrors.IllegalOperation, OSError) as exc:
                log.info("commit of %d partitions failed (%s); retrying", len(offsets), type(exc).__name__)
                return False
            for tp, offset in offsets.items():
                tracker = self._trackers.get(tp)
                if tracker is not None:
                    tracker.committed = max(tracker.committed, offset)
            return True
