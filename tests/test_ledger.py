"""The bookkeeping checker: what it calls lost, duplicated, unexpected and recovered."""

from __future__ import annotations

import asyncio
import json

import pytest

import polybus
from polybus.testing import Ledger


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_ledger_sorts_every_id_into_its_class() -> None:
    clock = Clock()
    ledger = Ledger(clock=clock)
    ledger.confirmed(["a", "b", "c"])
    ledger.failed(["d", "e"])
    clock.now = 1.0
    ledger.delivered("a")
    ledger.fault("cut")
    clock.now = 3.5
    ledger.delivered("a", attempt=2)
    ledger.delivered("b")
    ledger.delivered("d")
    ledger.delivered("x")
    report = ledger.report()
    assert report.sent == 3 and report.send_failed == 2
    assert report.lost == {"c"}
    assert report.duplicated == {"a": 2} and report.duplicates == 1
    assert report.unexpected == {"x"}
    assert report.recovered == {"d"}
    assert report.max_gap_after_fault == pytest.approx(2.5)
    assert ledger.highest_attempt("a") == 2 and ledger.seen("a") == 2
    assert not report.ok
    with pytest.raises(AssertionError, match=r"1 lost .* e\.g\. c; 1 unexpected .* e\.g\. x"):
        report.check()


def test_check_bounds_duplicates_only_when_asked() -> None:
    ledger = Ledger()
    ledger.confirmed("a")
    for _ in range(3):
        ledger.delivered("a")
    report = ledger.report()
    assert report.check() is report  # duplicates are reported, not failed, by default
    assert report.check(max_duplicates=2) is report
    with pytest.raises(AssertionError, match="2 duplicate deliveries, more than the 1 allowed"):
        report.check(max_duplicates=1)


def test_a_send_that_raises_books_its_ids_as_failed() -> None:
    async def main() -> None:
        async with polybus.connect("memory://") as broker:
            topic = broker.topic("ledger")
            await topic.ensure()
            ledger = Ledger()
            async with topic.producer() as producer:
                messages = [polybus.Message(body=b"1"), polybus.Message(body=b"2")]
                assert await ledger.send(producer, messages)
            # a closed producer raises ClosedError (a PolybusError): booked, not raised
            late = [polybus.Message(body=b"3")]
            assert not await ledger.send(producer, late)
            report = ledger.report()
            assert ledger.sent_ids == {m.id for m in messages}
            assert report.send_failed == 1 and ledger.outstanding == 2

    asyncio.run(main())


def test_wait_complete_returns_when_the_last_confirmed_id_arrives() -> None:
    async def main() -> None:
        ledger = Ledger()
        ledger.confirmed(["a", "b"])
        assert not await ledger.wait_complete(0.05)
        asyncio.get_running_loop().call_later(0.05, ledger.delivered, "a")
        asyncio.get_running_loop().call_later(0.1, ledger.delivered, "b")
        assert await ledger.wait_complete(5)
        assert ledger.complete()

    asyncio.run(main())


def test_snapshots_of_several_processes_merge_into_one_report() -> None:
    producer_side, consumer_side = Ledger(), Ledger()
    producer_side.confirmed(["a", "b"])
    consumer_side.delivered("a")
    consumer_side.delivered("a", attempt=2)
    consumer_side.delivered("b")
    consumer_side.fault("kill")
    merged = Ledger()
    for part in (producer_side, consumer_side):
        merged.merge(json.loads(json.dumps(part.snapshot())))
    report = merged.report()
    assert report.ok and report.duplicated == {"a": 2} and report.faults == 1
    assert merged.highest_attempt("a") == 2 and merged.complete()


def test_wait_deliveries_times_a_fault_into_the_stream() -> None:
    async def main() -> None:
        ledger = Ledger()
        ledger.confirmed(["a", "b", "c"])
        assert not await ledger.wait_deliveries(1, timeout=0.05)
        loop = asyncio.get_running_loop()
        for delay, message_id in ((0.02, "a"), (0.04, "b"), (0.06, "a")):
            loop.call_later(delay, ledger.delivered, message_id)
        assert await ledger.wait_deliveries(3, timeout=5)
        assert ledger.deliveries == 3 and ledger.outstanding == 1

    asyncio.run(main())


def test_merged_deliveries_wake_wait_deliveries() -> None:
    async def main() -> None:
        ledger, worker = Ledger(), Ledger()
        for message_id in ("a", "b"):
            worker.delivered(message_id)
        waiting = asyncio.create_task(ledger.wait_deliveries(2, timeout=5))
        await asyncio.sleep(0)
        ledger.merge(worker.snapshot())
        assert await waiting

    asyncio.run(main())


def test_wait_sent_times_a_fault_into_the_producers_stream() -> None:
    async def main() -> None:
        ledger = Ledger()
        assert not await ledger.wait_sent(2, timeout=0.05)
        loop = asyncio.get_running_loop()
        loop.call_later(0.02, ledger.confirmed, ["a"])
        loop.call_later(0.04, ledger.failed, ["b"])  # a failed send does not count
        loop.call_later(0.06, ledger.confirmed, ["a", "c"])
        assert await ledger.wait_sent(2, timeout=5)
        assert ledger.sent_ids == {"a", "c"}

    asyncio.run(main())
