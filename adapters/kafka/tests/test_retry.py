"""``RetryQueue``: deliveries held until due come out in due order, a fetch's worth at a time."""

from __future__ import annotations

from typing import Any

from polybus_kafka._retry import RetryQueue


def test_due_deliveries_come_out_in_order_at_most_limit_at_a_time() -> None:
    queue = RetryQueue(broker=None, topic=None)  # type: ignore[arg-type]  # only holding, no sending
    items: list[Any] = [f"d{i}" for i in range(6)]
    for due, item in zip([5.0, 1.0, 3.0, 2.0, 4.0, 50.0], items, strict=True):
        queue.hold(due, item)
    assert queue.pop_due(10.0, 2) == ["d1", "d3"]
    assert queue.pop_due(10.0, 2) == ["d2", "d4"]
    assert queue.next_due() == 10.0  # the one left over, due now
    assert queue.pop_due(10.0, 5) == ["d0"]
    assert queue.pop_due(10.0, 5) == [] and queue.next_due() == 50.0
    queue.drop(lambda d: d == "d5")
    assert len(queue) == 0
