"""The idempotent consumer: :func:`idempotent`, the :class:`IdempotencyStore` protocol, :class:`MemoryStore`.

A delivery is processed at most once per key (default: its message id) within ``ttl``, on every
broker, by asking a store before the handler runs:

- ``claim(key, lease)`` answers ``CLAIMED`` (go ahead: the claim is held for ``lease`` seconds),
  ``DONE`` (already processed: ack without running) or ``BUSY`` (another consumer holds a live claim:
  the delivery is nacked with a delay of about the lease remaining, so the copy comes back when the
  holder has finished or died; it never waits in the handler slot).
- ``complete(claim, ttl)`` records the key as processed for ``ttl`` seconds, only after the handler
  succeeded. A crash between that and the ack redelivers a copy that is then skipped as done.
- ``release(claim)`` drops a claim whose handler failed, so that the redelivery runs it again.

A claim carries a token: only its holder completes or releases it. A holder that dies simply stops:
its claim expires after the lease and the next copy takes it over. Keys are scoped to the delivery's
topic and group (two groups of a topic each process a message once).
Imports ``polybus`` and ``polybus_patterns._lifecycle`` only.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import enum
import functools
import itertools
import logging
import os
from collections.abc import Awaitable, Callable
from time import monotonic
from typing import Generic, Protocol, TypeVar, runtime_checkable

import polybus
from polybus_patterns._lifecycle import AsyncContext

__all__ = [
    "Claim",
    "ClaimLostError",
    "ClaimState",
    "IdempotencyStore",
    "IdempotencyStoreError",
    "MemoryStore",
    "current_claim",
    "idempotent",
]

log = logging.getLogger("polybus.patterns")

SWEEP_FLOOR = 1024
"""MemoryStore sweeps expired entries out at this size, or at twice the size after the last sweep."""

T = TypeVar("T")
R = TypeVar("R")

DEFAULT_TTL = 7 * 24 * 3600.0
"""Seconds a processed key is remembered unless ``ttl=`` says otherwise: a week."""
MIN_BUSY_DELAY = 0.1
"""Shortest nack delay of a copy that found the key claimed: never a hot loop."""


class ClaimState(enum.Enum):
    """What :meth:`IdempotencyStore.claim` found."""

    CLAIMED = "claimed"
    """The caller holds the key now: run the handler, then ``complete`` or ``release``."""
    DONE = "done"
    """The key was processed (within its ttl): skip it."""
    BUSY = "busy"
    """Another holder's claim is live for ``retry_after`` more seconds: try again then."""


@dataclasses.dataclass(slots=True)
class Claim:
    """The answer of :meth:`IdempotencyStore.claim`; a ``CLAIMED`` one is the caller's to settle."""

    key: str
    state: ClaimState
    token: str | None = None
    """Identifies the holder of a ``CLAIMED`` key: only it may ``complete`` or ``release``."""
    retry_after: float = 0.0
    """For ``BUSY``: seconds until the holder's lease runs out."""
    completed: bool = False
    """Set once the key was recorded as done (by ``complete`` or by an inbox transaction)."""


CLAIMED, DONE, BUSY = ClaimState.CLAIMED, ClaimState.DONE, ClaimState.BUSY
NACK = polybus.Outcome.NACK


class ClaimLostError(polybus.PolybusError):
    """The claim's lease ran out and another consumer took the key over before this one finished.

    Raised by an inbox transaction (which then rolls back); the middleware only logs it after a
    handler that succeeded, since the work is done by then. A lease shorter than the handler's
    longest run is the usual cause."""


class IdempotencyStoreError(polybus.PolybusError):
    """A store could not be reached, or refused an operation (the cause is chained, passwords scrubbed).

    Raised from ``claim``: the handler does not run and the delivery is retried like any failure."""


@runtime_checkable
class IdempotencyStore(Protocol):
    """Where processed keys and live claims are kept. Implementations enforce both expiries themselves.

    Every method is safe to call from many consumers (and processes, for shared stores) at once.
    """

    async def claim(self, key: str, lease: float) -> Claim:
        """Claim ``key`` for ``lease`` seconds unless it is done or claimed by a live holder.

        An expired claim (its holder died or overran) is taken over with a new token."""
        ...

    async def complete(self, claim: Claim, ttl: float) -> bool:
        """Record the claim's key as done for ``ttl`` seconds. False when the claim was lost: another
        holder took the key over after the lease ran out (the key is left to that holder)."""
        ...

    async def release(self, claim: Claim) -> None:
        """Drop the claim (if still held by this token) so the next copy runs the handler again."""
        ...

    async def aclose(self) -> None:
        """Release connections and background tasks; idempotent."""
        ...


@dataclasses.dataclass(slots=True)
class CurrentClaim:
    """What :func:`idempotent` is doing for the handler running now (see :func:`current_claim`)."""

    store: IdempotencyStore
    claim: Claim
    ttl: float


_current: contextvars.ContextVar[CurrentClaim | None] = contextvars.ContextVar(
    "polybus_patterns_idempotency_claim", default=None
)


def current_claim() -> CurrentClaim | None:
    """The claim :func:`idempotent` holds for the handler running in this task, else ``None``.

    Stores that can record the key together with the handler's own writes (the inbox form of
    :class:`~polybus_patterns.PostgresStore`) find it here."""
    return _current.get()


def default_key(delivery: polybus.Delivery) -> str:
    """The message id: what the default ``idempotent`` de-duplicates on."""
    return delivery.id


def idempotent(
    store: IdempotencyStore,
    *,
    key: Callable[[polybus.Delivery], str | None] | None = None,
    ttl: float = DEFAULT_TTL,
    lease: float = 60.0,
) -> polybus.Middleware:
    """Middleware: run the handler at most once per key (default: the message id) within ``ttl`` seconds.

    ``key(delivery)`` may name what makes two messages the same (an order number in a header);
    returning ``None`` processes that delivery without de-duplication. Keys are scoped to the
    delivery's topic and group. ``lease`` is how long a claim protects a running handler: make it
    longer than the handler's longest run. A copy that arrives while another consumer holds the key
    is nacked with a delay of about the lease remaining; a handler that raises (or nacks) releases
    the claim so that the redelivery runs it. Put ``retry(...)`` outside ``idempotent(...)``.
    """
    if ttl <= 0:
        raise polybus.ConfigurationError(f"ttl must be > 0 seconds, got {ttl!r}")
    if lease <= 0:
        raise polybus.ConfigurationError(f"lease must be > 0 seconds, got {lease!r}")
    if not isinstance(store, IdempotencyStore):
        raise polybus.ConfigurationError(f"{store!r} is not an IdempotencyStore")
    key_of = key or default_key
    if type(store) is MemoryStore:
        return _in_memory(store, key_of, ttl, lease)
    claim_key, complete, release = store.claim, store.complete, store.release
    inbox = hasattr(store, "transaction")  # only a store with an inbox form needs current_claim()

    def middleware(handler: polybus.Handler) -> polybus.Handler:
        @functools.wraps(handler)
        async def handle(delivery: polybus.Delivery) -> None:
            name = key_of(delivery)
            if name is None:
                await handler(delivery)
                return
            claim = await claim_key(f"{delivery.topic}|{delivery.group or ''}|{name}", lease)
            state = claim.state
            if state is DONE:
                return  # processed already: the runner acks it
            if state is BUSY:
                await delivery.nack(max(MIN_BUSY_DELAY, min(claim.retry_after, lease)))
                return
            token = _current.set(CurrentClaim(store, claim, ttl)) if inbox else None
            try:
                await handler(delivery)
            except BaseException:
                await _release(release, claim)
                raise
            finally:
                if token is not None:
                    _current.reset(token)
            if delivery.outcome is NACK:  # the handler asked for a redelivery
                await _release(release, claim)
            elif not claim.completed:
                try:
                    recorded = await complete(claim, ttl)
                except polybus.PolybusError as exc:  # the work is done: ack it; a copy may run again
                    log.warning("could not record %r as done: %s", claim.key, exc)
                    return
                if not recorded:
                    log.warning(
                        "the claim on %r ran out (lease %ss) and another consumer took it over before "
                        "%r finished: the handler may have run twice; make the lease longer",
                        claim.key,
                        lease,
                        delivery,
                    )

        return handle

    return middleware


def _in_memory(
    store: MemoryStore, key_of: Callable[[polybus.Delivery], str | None], ttl: float, lease: float
) -> polybus.Middleware:
    """:func:`idempotent` on a :class:`MemoryStore`: the same rules as the general path, the store's
    table read and written in place (no coroutine, no :class:`Claim` per message), because here the
    middleware's own cost is all there is: the broker may hand out a message every few microseconds."""
    tokens = store._tokens

    def middleware(handler: polybus.Handler) -> polybus.Handler:
        @functools.wraps(handler)
        async def handle(delivery: polybus.Delivery) -> None:
            name = key_of(delivery)
            if name is None:
                await handler(delivery)
                return
            key = f"{delivery.topic}|{delivery.group or ''}|{name}"
            now = monotonic()
            entries = store._entries
            entry = entries.get(key)
            if entry is not None and entry[1] > now:
                if entry[0] is not None:  # busy: come back when the holder's lease is over
                    await delivery.nack(max(MIN_BUSY_DELAY, min(entry[1] - now, lease)))
                return  # else done: the runner acks it
            if store._closed:
                raise polybus.ClosedError(f"{store!r} is closed; create a new one")
            token = str(next(tokens))
            entries[key] = (token, now + lease)
            if len(entries) >= store._sweep_at:
                store._sweep(now)
                entries = store._entries
            try:
                await handler(delivery)
            except BaseException:
                entries = store._entries  # (a sweep may have replaced the table meanwhile)
                if entries.get(key, _NOTHING)[0] == token:
                    del entries[key]
                raise
            entries = store._entries
            entry = entries.get(key, _NOTHING)
            if delivery.outcome is NACK:  # the handler asked for a redelivery: release
                if entry[0] == token:
                    del entries[key]
            elif entry[0] == token or entry is _NOTHING or entry[1] <= monotonic():
                entries[key] = (None, now + ttl)  # the ttl counts from the claim: a few ms early
            else:
                log.warning(
                    "the claim on %r ran out (lease %ss) and another consumer took it over before "
                    "%r finished: the handler may have run twice; make the lease longer",
                    key,
                    lease,
                    delivery,
                )

        return handle

    return middleware


_NOTHING: tuple[None, float] = (None, 0.0)


async def _release(release: Callable[[Claim], Awaitable[None]], claim: Claim) -> None:
    """Release after a failure; a store error here is logged, not raised (the lease expires anyway)."""
    try:
        await release(claim)
    except Exception as exc:
        log.warning("could not release the claim on %r (it expires with its lease): %s", claim.key, exc)


class Batcher(Generic[T, R]):
    """Coalesces the calls made in one turn of the event loop into one call of ``run`` with all of them.

    Thirty-two handlers claiming at once cost one round trip (a pipeline, one SQL statement and one
    commit) instead of thirty-two: what lets a shared store keep up with the broker. A call waits
    for the end of the current loop turn at most; batches do not wait for each other.
    """

    def __init__(self, run: Callable[[list[T]], Awaitable[list[R]]], max_batch: int = 512) -> None:
        self._run = run
        self._max = max_batch
        self._items: list[tuple[T, asyncio.Future[R]]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def __call__(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._items.append((item, future))
        if len(self._items) == 1:
            asyncio.get_running_loop().call_soon(self._flush)
        elif len(self._items) >= self._max:
            self._flush()
        return await future

    def _flush(self) -> None:
        items, self._items = self._items, []
        if items:
            task = asyncio.get_running_loop().create_task(self._send(items))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, items: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            results = await self._run([item for item, _ in items])
        except BaseException as exc:
            for _, future in items:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
        else:
            for (_, future), result in zip(items, results, strict=True):
                if not future.done():
                    future.set_result(result)


class _Tokens:
    """Claim tokens unique across processes: 64 random bits per process, then a counter."""

    def __init__(self) -> None:
        self.reset()
        os.register_at_fork(after_in_child=self.reset)

    def reset(self) -> None:
        self.prefix = os.urandom(8).hex()
        self.counter = itertools.count()

    def __call__(self) -> str:
        return f"{self.prefix}{next(self.counter):x}"


new_token = _Tokens()


class MemoryStore(AsyncContext):
    """Claims and processed keys in this process's memory: for one process (and for tests).

    Expiry is enforced: an expired claim or done key is as good as absent, and expired entries are
    swept out whenever the table has doubled since the last sweep, so memory stays bounded by what
    is live (amortised: no per-operation bookkeeping). Entries are tuples of a str and a float,
    which the garbage collector stops tracking: a million remembered keys cost it nothing.
    """

    def __init__(self) -> None:
        # key -> (the holder's token, or None once done; expiry on the monotonic clock)
        self._entries: dict[str, tuple[str | None, float]] = {}
        self._tokens = itertools.count()
        self._sweep_at = SWEEP_FLOOR
        self._closed = False

    def __repr__(self) -> str:
        return f"<MemoryStore keys={len(self._entries)}>"

    def __len__(self) -> int:
        """Entries held, live or expired but not yet swept."""
        return len(self._entries)

    def _sweep(self, now: float) -> None:
        self._entries = {key: entry for key, entry in self._entries.items() if entry[1] > now}
        self._sweep_at = max(SWEEP_FLOOR, 2 * len(self._entries))

    async def claim(self, key: str, lease: float) -> Claim:
        if self._closed:
            raise polybus.ClosedError(f"{self!r} is closed; create a new one")
        now = monotonic()
        entries = self._entries
        entry = entries.get(key)
        if entry is not None and entry[1] > now:
            if entry[0] is None:
                return Claim(key, DONE)
            return Claim(key, BUSY, None, entry[1] - now)
        claim = Claim(key, CLAIMED, str(next(self._tokens)))
        entries[key] = (claim.token, now + lease)
        if len(entries) >= self._sweep_at:
            self._sweep(now)
        return claim

    async def complete(self, claim: Claim, ttl: float) -> bool:
        if self._closed:
            raise polybus.ClosedError(f"{self!r} is closed; create a new one")
        now = monotonic()
        entry = self._entries.get(claim.key)
        if entry is not None and entry[0] != claim.token and entry[1] > now:
            return False  # taken over by another holder after the lease ran out
        self._entries[claim.key] = (None, now + ttl)
        claim.completed = True
        return True

    async def release(self, claim: Claim) -> None:
        if self._closed:
            raise polybus.ClosedError(f"{self!r} is closed; create a new one")
        entry = self._entries.get(claim.key)
        if entry is not None and entry[0] == claim.token:
            del self._entries[claim.key]

    async def aclose(self) -> None:
        """Forget everything; a closed store refuses further use."""
        self._closed = True
        self._entries.clear()
