"""``PartitionTracker``: which offsets of one assigned partition may be committed.

Kafka commits a position, not a set of messages: committing offset N says "everything below N is
done". With concurrent handlers a later offset may be acked before an earlier one, so the tracker
only ever commits up to the first offset that is still unsettled. Imports nothing from polybus.
"""

from __future__ import annotations

import collections

__all__ = ["PartitionTracker"]


class PartitionTracker:
    """Offsets handed out from one partition during one assignment, in fetch order.

    ``alive`` turns false when the partition is revoked: settling a delivery of a dead tracker does
    nothing (the new owner re-reads it from the last commit).
    """

    __slots__ = ("_done", "_pending", "alive", "committed", "next_offset", "tp")

    def __init__(self, tp: object, start: int) -> None:
        self.tp = tp
        self.alive = True
        self.next_offset = start
        """Offset after the last record fetched."""
        self.committed = start
        """Last offset committed (or known committed) for the group."""
        self._pending: collections.deque[int] = collections.deque()
        self._done: set[int] = set()

    def add_fetched(self, offsets: list[int]) -> None:
        """Records at ``offsets`` (rising, all at or after ``next_offset``) were fetched."""
        self._pending.extend(offsets)
        self.next_offset = offsets[-1] + 1

    def done(self, offset: int) -> bool:
        """The record at ``offset`` was settled; return True if the commit point moved."""
        pending = self._pending
        if not pending or offset < pending[0]:
            return False
        if offset != pending[0]:
            self._done.add(offset)
            return False
        pending.popleft()
        while pending and pending[0] in self._done:
            self._done.discard(pending.popleft())
        return True

    @property
    def commit_point(self) -> int:
        """The offset to commit: the first unsettled one, or the one after the last fetched."""
        return self._pending[0] if self._pending else self.next_offset

    @property
    def busy(self) -> bool:
        """True while some fetched record of this partition is unsettled."""
        return bool(self._pending)

    @property
    def dirty(self) -> bool:
        """True if the commit point moved past what was committed."""
        return self.commit_point > self.committed
