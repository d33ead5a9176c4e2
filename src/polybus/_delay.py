"""``DelayHeap``: items kept until their due time, popped in due order.

Adapters that hold messages back (a nack with a delay, a retry copy not yet due) keep them here
instead of each writing its own heap. Times are whatever clock the caller uses, consistently
(``loop.time()``, ``time.monotonic()`` or epoch seconds). Imports nothing from polybus.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["DelayHeap"]

T = TypeVar("T")


class DelayHeap(Generic[T]):
    """A min-heap of ``(due, item)``; items with equal due times keep their push order."""

    __slots__ = ("_heap", "_seq")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, T]] = []
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._heap)

    def __bool__(self) -> bool:
        return bool(self._heap)

    def push(self, due: float, item: T) -> None:
        """Keep ``item`` until ``due``."""
        heapq.heappush(self._heap, (due, next(self._seq), item))

    def next_due(self) -> float | None:
        """The earliest due time, or ``None`` when empty."""
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float) -> list[T]:
        """Remove and return every item due at ``now`` or earlier, earliest first."""
        heap = self._heap
        out: list[T] = []
        while heap and heap[0][0] <= now:
            out.append(heapq.heappop(heap)[2])
        return out

    def items(self) -> list[T]:
        """Every item held, earliest first (the heap is left as it is)."""
        return [entry[2] for entry in sorted(self._heap)]

    def remove(self, predicate: Callable[[T], bool]) -> list[T]:
        """Remove and return the items for which ``predicate`` is true."""
        kept: list[tuple[float, int, T]] = []
        removed: list[tuple[float, int, T]] = []
        for entry in self._heap:
            (removed if predicate(entry[2]) else kept).append(entry)
        if removed:
            heapq.heapify(kept)
            self._heap = kept
        return [entry[2] for entry in sorted(removed)]

    def clear(self) -> list[T]:
        """Remove and return everything, earliest first."""
        out = self.items()
        self._heap = []
        return out
