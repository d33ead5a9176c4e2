"""``Ledger``: total bookkeeping of a message stream, to prove at-least-once under faults.

Record every id a producer was told was confirmed, every id a send raised for, every delivery a
handler saw (with its attempt) and the moment of every fault you inject; :meth:`Ledger.report`
then says what was **lost** (confirmed, never delivered), **duplicated** (delivered more than
once), **unexpected** (delivered, never sent), **recovered** (a send raised, the message came
anyway) and how long the stream stalled after each fault::

    ledger = Ledger()
    await ledger.send(producer, [polybus.Message(body=b"...") for _ in range(1000)])
    ...                                       # in the handler:
    ledger.delivered(delivery.id, delivery.attempt)
    ledger.fault("broker killed")             # when you break something
    report = ledger.report()
    report.check(max_duplicates=100)          # AssertionError naming what went wrong

Thread-safe enough for one event loop (nothing here awaits while it updates), and for several
processes through :meth:`Ledger.merge` of their :meth:`Ledger.snapshot`. Imports nothing from
polybus at module level but the public API.
"""

from __future__ import annotations

import asyncio
import bisect
import dataclasses
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

import polybus

__all__ = ["Ledger", "LedgerReport"]


def _ids(ids: str | Iterable[str]) -> Iterable[str]:
    return (ids,) if isinstance(ids, str) else ids


@dataclasses.dataclass(frozen=True)
class LedgerReport:
    """What a :class:`Ledger` saw. ``ok`` is true when nothing was lost and nothing unexpected came."""

    sent: int
    """Ids the broker confirmed."""
    send_failed: int
    """Ids whose send raised (they may or may not have reached the broker)."""
    delivered: int
    """Distinct ids delivered (confirmed or not)."""
    deliveries: int
    """Deliveries in all, redeliveries included."""
    lost: frozenset[str]
    """Confirmed, never delivered: must be empty."""
    duplicated: Mapping[str, int]
    """Id -> times delivered, for ids delivered more than once."""
    unexpected: frozenset[str]
    """Delivered but neither confirmed nor failed: must be empty."""
    recovered: frozenset[str]
    """A send raised for them, yet they were delivered (allowed: the broker had them)."""
    faults: int
    """Faults recorded with :meth:`Ledger.fault`."""
    max_gap_after_fault: float | None
    """Seconds from a fault to the next delivery, the largest over all faults (None: no fault, or
    no delivery after one)."""

    @property
    def duplicates(self) -> int:
        """Deliveries beyond the first of each id."""
        return sum(count - 1 for count in self.duplicated.values())

    @property
    def ok(self) -> bool:
        return not self.lost and not self.unexpected

    def check(self, *, max_duplicates: int | None = None) -> LedgerReport:
        """Raise ``AssertionError`` naming what is wrong: any loss, any unexpected delivery, or
        more than ``max_duplicates`` duplicate deliveries (None: duplicates only reported)."""
        problems = []
        if self.lost:
            problems.append(f"{len(self.lost)} lost (confirmed, never delivered), e.g. {_some(self.lost)}")
        if self.unexpected:
            problems.append(f"{len(self.unexpected)} unexpected (never sent), e.g. {_some(self.unexpected)}")
        if max_duplicates is not None and self.duplicates > max_duplicates:
            problems.append(f"{self.duplicates} duplicate deliveries, more than the {max_duplicates} allowed")
        if problems:
            raise AssertionError(f"{'; '.join(problems)} [{self.summary()}]")
        return self

    def summary(self) -> str:
        gap = "-" if self.max_gap_after_fault is None else f"{self.max_gap_after_fault:.2f}s"
        return (
            f"sent {self.sent}, send failed {self.send_failed}, delivered {self.delivered} "
            f"({self.deliveries} deliveries), lost {len(self.lost)}, duplicates {self.duplicates}, "
            f"unexpected {len(self.unexpected)}, recovered {len(self.recovered)}, "
            f"faults {self.faults}, max gap after a fault {gap}"
        )

    def as_dict(self) -> dict[str, Any]:
        """The figures (counts, not ids), for a report table or JSON."""
        return {
            "sent": self.sent,
            "send_failed": self.send_failed,
            "delivered": self.delivered,
            "deliveries": self.deliveries,
            "lost": len(self.lost),
            "duplicates": self.duplicates,
            "unexpected": len(self.unexpected),
            "recovered": len(self.recovered),
            "faults": self.faults,
            "max_gap_after_fault": self.max_gap_after_fault,
        }


def _some(ids: Iterable[str], count: int = 3) -> str:
    return ", ".join(sorted(ids)[:count])


class Ledger:
    """Records what was sent, what failed, what was delivered and when faults happened."""

    def __init__(self, *, clock: Any = time.monotonic) -> None:
        self._clock = clock
        self._confirmed: set[str] = set()
        self._failed: set[str] = set()
        self._counts: Counter[str] = Counter()
        self._attempts: dict[str, int] = {}
        self._delivery_times: list[float] = []
        self._fault_times: list[tuple[float, str]] = []
        self._outstanding = 0
        self._done: asyncio.Event | None = None
        self._waiters: list[tuple[str, int, asyncio.Future[None]]] = []  # (what, count, wakes)

    def __repr__(self) -> str:
        return f"<Ledger {self.report().summary()}>"

    # -- recording -------------------------------------------------------------------------------

    def confirmed(self, ids: str | Iterable[str]) -> None:
        """The broker confirmed these ids (``send`` returned them)."""
        for message_id in _ids(ids):
            if message_id not in self._confirmed:
                self._confirmed.add(message_id)
                if message_id not in self._counts:
                    self._outstanding += 1
        if self._waiters:
            self._wake()

    def failed(self, ids: str | Iterable[str]) -> None:
        """A send of these ids raised: the broker may or may not have them."""
        self._failed.update(_ids(ids))

    def delivered(self, message_id: str, attempt: int = 1) -> None:
        """A handler saw ``message_id`` (its ``attempt``, as the delivery says)."""
        self._count(message_id, 1, attempt)
        self._delivery_times.append(self._clock())
        if self._waiters:
            self._wake()

    def _reached(self, what: str, count: int) -> bool:
        return (len(self._confirmed) if what == "sent" else len(self._delivery_times)) >= count

    def _wake(self) -> None:
        for entry in [w for w in self._waiters if self._reached(w[0], w[1])]:
            self._waiters.remove(entry)
            if not entry[2].done():
                entry[2].set_result(None)

    def _count(self, message_id: str, times: int, attempt: int) -> None:
        first = message_id not in self._counts
        self._counts[message_id] += times
        if first and message_id in self._confirmed:
            self._outstanding -= 1
            if self._outstanding == 0 and self._done is not None:
                self._done.set()
        if attempt > self._attempts.get(message_id, 0):
            self._attempts[message_id] = attempt

    def record(self, delivery: polybus.Delivery) -> None:
        """:meth:`delivered` for a :class:`polybus.Delivery`."""
        self.delivered(delivery.id, delivery.attempt)

    def fault(self, label: str = "fault") -> None:
        """A fault was injected now (for the time-to-recover figure)."""
        self._fault_times.append((self._clock(), label))

    async def send(self, producer: polybus.Producer, messages: list[polybus.Message]) -> bool:
        """Send ``messages`` with ``producer`` and record the outcome: confirmed ids on success,
        failed ids when the send raised a :class:`polybus.PolybusError` (returns False then;
        anything else propagates, still recorded as failed)."""
        ids = [message.id for message in messages]
        try:
            confirmed = await producer.send_many(messages)
        except polybus.PolybusError:
            self.failed(ids)
            return False
        except BaseException:
            self.failed(ids)
            raise
        self.confirmed(confirmed)
        return True

    # -- reading ---------------------------------------------------------------------------------

    @property
    def sent_ids(self) -> frozenset[str]:
        return frozenset(self._confirmed)

    def seen(self, message_id: str) -> int:
        """How many times ``message_id`` was delivered."""
        return self._counts[message_id]

    def highest_attempt(self, message_id: str) -> int:
        """The highest attempt number a delivery of ``message_id`` carried (0: never delivered)."""
        return self._attempts.get(message_id, 0)

    @property
    def outstanding(self) -> int:
        """Confirmed ids not delivered yet."""
        return self._outstanding

    def complete(self) -> bool:
        """Every confirmed id has been delivered at least once."""
        return self._outstanding == 0

    @property
    def deliveries(self) -> int:
        """Deliveries booked so far, redeliveries included."""
        return len(self._delivery_times)

    async def wait_deliveries(self, count: int, timeout: float | None = None) -> bool:
        """Wait until ``count`` deliveries were booked (to time a fault into the stream); True if so."""
        return await self._wait("deliveries", count, timeout)

    async def wait_sent(self, count: int, timeout: float | None = None) -> bool:
        """Wait until ``count`` ids were confirmed (to fault the producers mid-stream); True if so."""
        return await self._wait("sent", count, timeout)

    async def _wait(self, what: str, count: int, timeout: float | None) -> bool:
        if self._reached(what, count):
            return True
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (what, count, waiter)
        self._waiters.append(entry)
        try:
            async with asyncio.timeout(timeout):
                await waiter
        except TimeoutError:
            return False
        finally:
            if entry in self._waiters:
                self._waiters.remove(entry)
        return True

    async def wait_complete(self, timeout: float) -> bool:
        """Wait until every id confirmed so far was delivered, or ``timeout`` seconds; True if so."""
        if self._outstanding == 0:
            return True
        self._done = asyncio.Event()
        try:
            async with asyncio.timeout(timeout):
                await self._done.wait()
        except TimeoutError:
            return False
        finally:
            self._done = None
        return True

    def report(self) -> LedgerReport:
        delivered = set(self._counts)
        known = self._confirmed | self._failed
        return LedgerReport(
            sent=len(self._confirmed),
            send_failed=len(self._failed - self._confirmed),
            delivered=len(delivered),
            deliveries=sum(self._counts.values()),
            lost=frozenset(self._confirmed - delivered),
            duplicated={i: n for i, n in self._counts.items() if n > 1},
            unexpected=frozenset(delivered - known),
            recovered=frozenset((self._failed - self._confirmed) & delivered),
            faults=len(self._fault_times),
            max_gap_after_fault=self._max_gap(),
        )

    def _max_gap(self) -> float | None:
        times = sorted(self._delivery_times)
        gaps = []
        for at, _label in self._fault_times:
            index = bisect.bisect_right(times, at)
            if index < len(times):
                gaps.append(times[index] - at)
        return max(gaps) if gaps else None

    # -- across processes ------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """A JSON-ready copy of what this ledger recorded (send it from a worker process)."""
        return {
            "confirmed": sorted(self._confirmed),
            "failed": sorted(self._failed),
            "counts": dict(self._counts),
            "attempts": dict(self._attempts),
            "delivery_times": list(self._delivery_times),
            "faults": [list(fault) for fault in self._fault_times],
        }

    def merge(self, snapshot: Mapping[str, Any]) -> None:
        """Add what another ledger recorded (its :meth:`snapshot`). Clocks must be comparable
        (``time.monotonic`` is, between processes of one machine)."""
        self._failed.update(snapshot.get("failed", ()))
        attempts = snapshot.get("attempts", {})
        for message_id, count in snapshot.get("counts", {}).items():
            self._count(message_id, count, attempts.get(message_id, 0))
        self.confirmed(snapshot.get("confirmed", ()))
        self._delivery_times.extend(snapshot.get("delivery_times", ()))
        self._fault_times.extend((float(at), str(label)) for at, label in snapshot.get("faults", ()))
        if self._waiters:  # deliveries booked by other processes count for wait_deliveries too
            self._wake()
