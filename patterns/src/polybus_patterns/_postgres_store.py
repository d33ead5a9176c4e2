"""``PostgresStore``: the idempotency store in a PostgreSQL table, with the inbox form.

The table (created on first use, under an advisory lock so that processes starting together do not
race) has one row per key: ``token`` names the holder of a live claim and is ``NULL`` once the key
is done; ``expires_at`` is the end of the lease, or of the ttl once done. Times are the server's
(``now()``), so consumers on machines with different clocks agree on who holds what.

- claim: ``INSERT ... ON CONFLICT (key) DO UPDATE ... WHERE expires_at <= now()``: a new key or an
  expired row (a dead holder's claim, a done key past its ttl) is taken with a new token in one
  statement; when nothing was written, the row says done or busy (and for how long).
- complete: writes ``token = NULL`` only while the row holds this token or has expired (or inserts
  the row when the cleanup already removed the expired claim); release: ``DELETE`` only while the
  row holds this token.
- batching: the calls made at the same moment (one turn of the event loop) go in one statement
  each kind (``unnest`` of arrays, keys in sorted order), one commit for all of them; a deadlock
  between two batches is retried.
- inbox: :meth:`PostgresStore.transaction` hands the handler a connection inside a transaction whose
  last statement is the ``complete`` above, so the handler's own writes and the done mark commit
  together, or not at all (a lost claim rolls the whole transaction back).
- expiry: a background task deletes expired rows every ``cleanup_interval`` seconds in batches of
  ``cleanup_batch`` (``FOR UPDATE SKIP LOCKED``, one short transaction each): it never waits for a
  row a handler holds, and an expired row is ignored by ``claim`` whether or not it was deleted yet.

The driver is asyncpg (the ``polybus-patterns[postgres]`` extra), imported when the store is created:
a native asyncio driver with its own pool, prepared statements cached per connection and the binary
protocol, the fastest way from asyncio to PostgreSQL, and a wheel with no libpq to install.
Imports ``polybus`` and ``polybus_patterns._idempotency`` and ``._lifecycle`` only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any, TypeVar

import polybus
from polybus_patterns._idempotency import (
    Batcher,
    Claim,
    ClaimLostError,
    ClaimState,
    IdempotencyStoreError,
    current_claim,
    new_token,
)
from polybus_patterns._lifecycle import AsyncContext

__all__ = ["PostgresStore"]

Item = TypeVar("Item")


def _unique_keys(items: Iterable[Item], key: Callable[[Item], str]) -> list[list[Item]]:
    """``items`` in rounds in which no key comes twice (one statement may touch a row only once)."""
    rounds: list[list[Item]] = []
    seen: list[set[str]] = []
    for item in items:
        name = key(item)
        for batch, names in zip(rounds, seen, strict=True):
            if name not in names:
                batch.append(item)
                names.add(name)
                break
        else:
            rounds.append([item])
            seen.append({name})
    return rounds


log = logging.getLogger("polybus.patterns")

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?")


def _import_asyncpg() -> Any:
    try:
        import asyncpg
    except ImportError as exc:  # pragma: no cover - the workspace has it
        raise polybus.ConfigurationError(
            "PostgresStore needs asyncpg: pip install 'polybus-patterns[postgres]'"
        ) from exc
    return asyncpg


class PostgresStore(AsyncContext):
    """Idempotency store in PostgreSQL (``postgresql://user:pass@host/db``; the password is never shown).

    ``table`` (``name`` or ``schema.name``) is created on first use. ``pool_size`` connections at
    most; expired rows are deleted every ``cleanup_interval`` seconds (``None``: never, call
    :meth:`cleanup` yourself) in batches of ``cleanup_batch``. :meth:`transaction` is the inbox form.
    """

    def __init__(
        self,
        dsn: str,
        *,
        table: str = "polybus_idempotency",
        pool_size: int = 10,
        cleanup_interval: float | None = 60.0,
        cleanup_batch: int = 1000,
    ) -> None:
        if not _IDENTIFIER.fullmatch(table):
            raise polybus.ConfigurationError(
                f"table must be a plain SQL name (schema.name allowed), got {table!r}"
            )
        if pool_size < 1 or cleanup_batch < 1:
            raise polybus.ConfigurationError("pool_size and cleanup_batch must be >= 1")
        self._asyncpg = _import_asyncpg()
        self._dsn = dsn
        self.table = table
        self._pool_size = pool_size
        self._cleanup_interval = cleanup_interval
        self._cleanup_batch = cleanup_batch
        self._pool: Any = None
        self._lock: asyncio.Lock | None = None
        self._cleaner: asyncio.Task[None] | None = None
        self._closed = False
        t = '"' + table.replace(".", '"."') + '"'
        index = '"' + table.replace(".", "_") + '_expires_at"'
        self._create = [
            f"CREATE TABLE IF NOT EXISTS {t} "
            "(key text PRIMARY KEY, token text, expires_at timestamptz NOT NULL)",
            f"CREATE INDEX IF NOT EXISTS {index} ON {t} (expires_at)",
        ]
        # the batched statements: one per turn of the event loop for all the calls made in it
        self._claim = (
            f"INSERT INTO {t} AS r (key, token, expires_at) "
            "SELECT key, token, now() + make_interval(secs => lease) "
            "FROM unnest($1::text[], $2::text[], $3::float8[]) AS i(key, token, lease) ORDER BY key "
            "ON CONFLICT (key) DO UPDATE SET token = EXCLUDED.token, expires_at = EXCLUDED.expires_at "
            "WHERE r.expires_at <= now() RETURNING r.key"
        )
        self._look = (
            f"SELECT key, token IS NULL, extract(epoch FROM expires_at - now())::float8 FROM {t} "
            "WHERE key = ANY($1::text[]) AND expires_at > now()"
        )
        self._complete_many = (
            "WITH i AS (SELECT * FROM unnest($1::text[], $2::text[], $3::float8[]) AS i(key, token, ttl)), "
            f"upd AS (UPDATE {t} AS r SET token = NULL, expires_at = now() + make_interval(secs => i.ttl) "
            "FROM i WHERE r.key = i.key AND (r.token = i.token OR r.expires_at <= now()) RETURNING r.key), "
            f"ins AS (INSERT INTO {t} (key, token, expires_at) "
            "SELECT i.key, NULL, now() + make_interval(secs => i.ttl) FROM i "
            f"WHERE NOT EXISTS (SELECT 1 FROM {t} AS e WHERE e.key = i.key) "
            "ORDER BY i.key ON CONFLICT (key) DO NOTHING RETURNING key) "
            "SELECT key FROM upd UNION ALL SELECT key FROM ins"
        )
        self._release = (
            f"DELETE FROM {t} AS r USING unnest($1::text[], $2::text[]) AS i(key, token) "
            "WHERE r.key = i.key AND r.token = i.token"
        )
        # the inbox's own complete, inside the handler's transaction
        self._complete = (
            f"INSERT INTO {t} AS r (key, token, expires_at) "
            "VALUES ($1, NULL, now() + make_interval(secs => $3)) "
            "ON CONFLICT (key) DO UPDATE SET token = NULL, expires_at = EXCLUDED.expires_at "
            "WHERE r.token = $2 OR r.expires_at <= now() RETURNING 1"
        )
        self._claims = Batcher(self._claim_many)
        self._completes = Batcher(self._complete_batch)
        self._releases = Batcher(self._release_many)
        self._cleanup = (
            f"WITH gone AS (DELETE FROM {t} WHERE key IN (SELECT key FROM {t} WHERE expires_at <= now() "
            "ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED) RETURNING 1) SELECT count(*) FROM gone"
        )

    def __repr__(self) -> str:
        return f"<PostgresStore {polybus.redact_url(self._dsn)} table={self.table!r}>"

    async def open(self) -> None:
        """Connect and create the table (``async with`` does it; so does a first claim)."""
        await self._open()

    def _error(self, exc: BaseException) -> IdempotencyStoreError:
        return IdempotencyStoreError(f"{self!r}: {type(exc).__name__}: {polybus.redact_url(str(exc))}")

    async def _open(self) -> Any:
        if self._closed:
            raise polybus.ClosedError(f"{self!r} is closed; create a new one")
        if self._pool is not None:
            return self._pool
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._pool is None:
                asyncpg = self._asyncpg
                try:
                    pool = await asyncpg.create_pool(self._dsn, min_size=1, max_size=self._pool_size)
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                    raise self._error(exc) from None
                try:
                    async with pool.acquire() as conn, conn.transaction():
                        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", self.table)
                        for statement in self._create:
                            await conn.execute(statement)
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                    await pool.close()
                    raise self._error(exc) from None
                self._pool = pool
                if self._cleanup_interval is not None:
                    self._cleaner = asyncio.create_task(self._clean_every(self._cleanup_interval))
        return self._pool

    async def _call(self, method: str, statement: str, *args: Any) -> Any:
        pool = self._pool or await self._open()
        asyncpg = self._asyncpg
        for attempt in range(3):
            try:
                async with pool.acquire() as conn:
                    return await getattr(conn, method)(statement, *args)
            except asyncpg.DeadlockDetectedError as exc:  # two batches locked rows in another order
                if attempt == 2:
                    raise self._error(exc) from None
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                raise self._error(exc) from None
        raise AssertionError("unreachable")

    async def _claim_many(self, calls: list[tuple[str, float]]) -> list[Claim]:
        results: list[Claim | None] = [None] * len(calls)
        todo = list(range(len(calls)))
        for _ in range(10):  # a row deleted between the two statements: claim again
            for batch in _unique_keys(todo, lambda i: calls[i][0]):
                tokens = {i: new_token() for i in batch}
                keys = [calls[i][0] for i in batch]
                rows = await self._call(
                    "fetch",
                    self._claim,
                    keys,
                    [tokens[i] for i in batch],
                    [float(calls[i][1]) for i in batch],
                )
                claimed = {row[0] for row in rows}
                for i in batch:
                    if calls[i][0] in claimed:
                        results[i] = Claim(calls[i][0], ClaimState.CLAIMED, tokens[i])
                others = [calls[i][0] for i in batch if results[i] is None]
                if others:
                    found = {r[0]: (r[1], r[2]) for r in await self._call("fetch", self._look, others)}
                    for i in batch:
                        key = calls[i][0]
                        if results[i] is None and key in found:
                            done, left = found[key]
                            results[i] = (
                                Claim(key, ClaimState.DONE)
                                if done
                                else Claim(key, ClaimState.BUSY, retry_after=left)
                            )
            todo = [i for i in todo if results[i] is None]
            if not todo:
                break
        return [c or Claim(calls[i][0], ClaimState.BUSY) for i, c in enumerate(results)]

    async def _complete_batch(self, calls: list[tuple[Claim, float]]) -> list[bool]:
        results = [False] * len(calls)
        for batch in _unique_keys(range(len(calls)), lambda i: calls[i][0].key):
            claims = [calls[i][0] for i in batch]
            rows = await self._call(
                "fetch",
                self._complete_many,
                [c.key for c in claims],
                [c.token for c in claims],
                [float(calls[i][1]) for i in batch],
            )
            done = {row[0] for row in rows}
            for i in batch:
                results[i] = calls[i][0].key in done
        return results

    async def _release_many(self, claims: list[Claim]) -> list[None]:
        for batch in _unique_keys(range(len(claims)), lambda i: claims[i].key):
            await self._call(
                "execute", self._release, [claims[i].key for i in batch], [claims[i].token for i in batch]
            )
        return [None] * len(claims)

    async def claim(self, key: str, lease: float) -> Claim:
        return await self._claims((key, lease))

    async def complete(self, claim: Claim, ttl: float) -> bool:
        done = await self._completes((claim, ttl))
        claim.completed = claim.completed or done
        return done

    async def release(self, claim: Claim) -> None:
        await self._releases(claim)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Any]:
        """The inbox form: an asyncpg connection in a transaction that also records the key as done.

        Use it inside a handler wrapped by ``idempotent(store)`` with this store::

            async with store.transaction() as conn:
                await conn.execute("INSERT INTO invoices (order_id, total) VALUES ($1, $2)", ...)

        On leaving the block the done mark is written in the same transaction and it commits: the
        handler's writes and the mark are durable together. An exception in the block rolls both
        back (the middleware then releases the claim and the message is retried). If the claim was
        lost (the lease ran out and another consumer took the key), :class:`ClaimLostError` is
        raised and everything rolls back.
        """
        current = current_claim()
        if current is None or current.store is not self:
            raise polybus.ConfigurationError(
                "store.transaction() is for a handler wrapped by idempotent(store) with this same store"
            )
        claim = current.claim
        pool = self._pool or await self._open()
        async with pool.acquire() as conn, conn.transaction():
            yield conn
            if not await conn.fetchval(self._complete, claim.key, claim.token, float(current.ttl)):
                raise ClaimLostError(
                    f"the claim on {claim.key!r} ran out and another consumer took it over: rolled back"
                )
        claim.completed = True

    async def cleanup(self) -> int:
        """Delete expired rows now, in batches; returns how many. Rows handlers hold are skipped."""
        removed = 0
        while True:
            gone = int(await self._call("fetchval", self._cleanup, self._cleanup_batch))
            removed += gone
            if gone < self._cleanup_batch:
                return removed
            await asyncio.sleep(0.01)  # room for the handlers' statements between batches

    async def _clean_every(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                removed = await self.cleanup()
            except polybus.PolybusError as exc:
                log.warning("cleanup of %r failed (tried again in %ss): %s", self, interval, exc)
            else:
                if removed:
                    log.debug("cleanup of %r removed %d expired rows", self, removed)

    async def aclose(self) -> None:
        """Stop the cleanup and close the pool; idempotent. A closed store refuses further use."""
        if self._closed:
            return
        self._closed = True
        cleaner, self._cleaner = self._cleaner, None
        if cleaner is not None:
            cleaner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await cleaner
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()
