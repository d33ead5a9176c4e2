"""``RetryQueue``: a consumer's deliveries that are not due yet, and its group's retry topic.

``nack(delay)`` of a group member stores a copy of the message on the group's retry topic
``<topic>.<group>.retry`` with ``polybus-attempt`` = attempt + 1 and ``polybus-due`` = now + delay;
the group reads that topic alongside its own. A copy read before it is due waits here, in memory,
ordered by due time, so a long delay never holds up a partition; when ``retry_buffer`` copies
wait, the consumer pauses its retry partitions. A listener (no group, no retry topic) keeps its
nacked deliveries here too. Imports polybus, polybus.adapter and this package's modules.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from polybus import PolybusError
from polybus.adapter import DelayHeap, Delivery, Message
from polybus_kafka._producer import publish
from polybus_kafka._wire import ATTEMPT_HEADER, DUE_HEADER

if TYPE_CHECKING:
    from polybus_kafka._broker import KafkaBroker

__all__ = ["RetryQueue"]

log = logging.getLogger("polybus.kafka")


class RetryQueue:
    """Deliveries waiting for their due time, and the retry topic (None for a listener)."""

    def __init__(self, broker: KafkaBroker, topic: str | None) -> None:
        self.broker = broker
        self.topic = topic
        self.heap: DelayHeap[Delivery] = DelayHeap()
        """Due times are seconds since the epoch (a retry copy's ``polybus-due`` is one)."""

    def __len__(self) -> int:
        return len(self.heap)

    @property
    def full(self) -> bool:
        """As many deliveries wait as ``retry_buffer`` allows: read no more from the retry topic."""
        return len(self.heap) >= self.broker.settings.retry_buffer

    def hold(self, due: float, delivery: Delivery) -> None:
        """Keep ``delivery`` until ``due`` (seconds since the epoch)."""
        self.heap.push(due, delivery)

    def next_due(self) -> float | None:
        return self.heap.next_due()

    def pop_due(self, now: float, limit: int) -> list[Delivery]:
        """Up to ``limit`` deliveries due at ``now``, the earliest first."""
        out = self.heap.pop_due(now)
        if len(out) > limit:  # the rest go back, due now, in their order (nothing else is due by now)
            for delivery in out[limit:]:
                self.heap.push(now, delivery)
            del out[limit:]
        return out

    def drop(self, predicate: Callable[[Delivery], bool]) -> None:
        """Drop the waiting deliveries for which ``predicate`` is true."""
        self.heap.remove(predicate)

    def clear(self) -> None:
        self.heap.clear()

    async def send_copy(self, delivery: Delivery, delay: float | None) -> bool:
        """Store a copy of ``delivery`` on the retry topic, due after ``delay``; False if that failed."""
        assert self.topic is not None
        due = time.time() + (delay or 0.0)
        copy = Message(
            body=delivery.body,
            headers=delivery.headers,
            key=delivery.key,
            id=delivery.id,
            timestamp=delivery.timestamp,
        )
        extra = {ATTEMPT_HEADER: str(delivery.attempt + 1), DUE_HEADER: str(int(due * 1000))}
        try:
            await publish(self.broker, self.topic, [copy], [extra])
        except PolybusError as exc:
            log.warning("nack of %s: the retry copy failed (%s); redelivering from memory", delivery.id, exc)
            return False
        return True
