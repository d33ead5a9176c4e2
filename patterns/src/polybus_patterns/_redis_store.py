"""``RedisStore``: the idempotency store in Redis, shared by every consumer process that reaches it.

One Redis string per key, ``<prefix><key>``: the holder's token while claimed (expiring after the
lease, ``PX``), ``d`` once done (expiring after the ttl). Redis enforces both expiries itself. Each
operation runs a small Lua script, so that read-and-write is atomic; the calls made at the same
moment (one turn of the event loop) are sent together, one round trip for all of them:

- claim: ``SET key token PX lease`` when the key is absent (a dead holder's claim has expired, so
  it is absent too); else ``d`` means done, and a token means busy for ``PTTL`` more milliseconds;
- complete: ``SET key d PX ttl`` only while the key holds this token or nothing (the claim ran out
  but nobody took it over); a foreign token means the claim was lost;
- release: ``DEL key`` only while it holds this token.
- inbox: :meth:`RedisStore.transaction` hands the handler a ``MULTI`` pipeline that ``WATCH``es
  the key: the handler's own Redis writes and the done mark run in one ``EXEC``, or not at all
  when the key changed meanwhile (the claim was lost).

redis-py (the ``polybus-patterns[redis]`` extra) is imported when the store is created.
Imports ``polybus`` and ``polybus_patterns._idempotency`` and ``._lifecycle`` only.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    import redis.asyncio

__all__ = ["RedisStore"]

CLAIM = """
local v = redis.call('GET', KEYS[1])
if not v then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if v == 'd' then return 0 end
local left = redis.call('PTTL', KEYS[1])
if left < 0 then left = 0 end
return -1 - left
"""
"""1: claimed; 0: done; -1 - n: busy for n more milliseconds."""

COMPLETE = """
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] or not v then
  redis.call('SET', KEYS[1], 'd', 'PX', ARGV[2])
  return 1
end
return 0
"""

RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

SCRIPTS = (CLAIM, COMPLETE, RELEASE)
SHAS = tuple(hashlib.sha1(script.encode()).hexdigest() for script in SCRIPTS)
"""What ``EVALSHA`` names each script by (Redis's own digest of its text)."""


def _import_redis() -> Any:
    try:
        import redis.asyncio
        import redis.exceptions
    except ImportError as exc:  # pragma: no cover - the workspace has it
        raise polybus.ConfigurationError(
            "RedisStore needs redis-py: pip install 'polybus-patterns[redis]'"
        ) from exc
    return redis


def _evalsha(sha: str, key: str, args: tuple[str | int, ...]) -> bytes:
    """``EVALSHA sha 1 key args...`` in RESP."""
    parts = [b"EVALSHA", sha.encode(), b"1", key.encode(), *(str(a).encode() for a in args)]
    return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)


def _millis(seconds: float) -> int:
    return max(1, round(seconds * 1000))


class RedisStore(AsyncContext):
    """Idempotency store in Redis (``redis://`` or ``rediss://`` URL; a password in it is never shown).

    ``prefix`` starts every key it writes. Connections open on first use; ``aclose()`` (or leaving
    ``async with``) closes them. ``max_connections`` bounds the pool: calls beyond it wait for one.
    """

    _raw_replies = True
    """Read replies off redis-py's stream reader where it has one (the tests turn it off to prove
    the fallback through ``read_response``)."""

    def __init__(self, url: str, *, prefix: str = "polybus:idem:", max_connections: int = 64) -> None:
        self._redis = _import_redis()
        self._url = url
        self._prefix = prefix
        self._max_connections = max_connections
        self._client: redis.asyncio.Redis | None = None
        self._call = Batcher(self._pipeline)
        self._closed = False

    def __repr__(self) -> str:
        return f"<RedisStore {polybus.redact_url(self._url)} prefix={self._prefix!r}>"

    async def open(self) -> None:
        """Create the client (``async with`` does it; so does a first claim)."""
        self._open()

    def _open(self) -> Any:
        if self._closed:
            raise polybus.ClosedError(f"{self!r} is closed; create a new one")
        if self._client is None:  # creating the client connects nothing yet: no await, no race
            try:
                # a blocking pool: a burst beyond max_connections waits for a connection, not fails
                pool = self._redis.asyncio.BlockingConnectionPool.from_url(
                    self._url, max_connections=self._max_connections, timeout=30
                )
                self._client = self._redis.asyncio.Redis(connection_pool=pool)
            except ValueError as exc:
                raise polybus.ConfigurationError(
                    f"not a Redis URL: {polybus.redact_url(self._url)}: {exc}"
                ) from None
        return self._client

    def _error(self, exc: BaseException) -> IdempotencyStoreError:
        return IdempotencyStoreError(f"{self!r}: {type(exc).__name__}: {polybus.redact_url(str(exc))}")

    async def _pipeline(self, calls: list[tuple[int, str, tuple[str | int, ...]]]) -> list[int]:
        """Run a batch of script calls in one round trip (``EVALSHA``; a script Redis lost is loaded
        again and only the calls it failed are repeated)."""
        client = self._open()
        errors = self._redis.exceptions
        results: list[Any] = [None] * len(calls)
        todo = list(range(len(calls)))
        for attempt in range(2):
            packed = b"".join(
                _evalsha(SHAS[calls[i][0]], self._prefix + calls[i][1], calls[i][2]) for i in todo
            )
            try:
                answers = await self._roundtrip(client.connection_pool, packed, len(todo))
            except errors.RedisError as exc:
                raise self._error(exc) from None
            missing = []
            for i, answer in zip(todo, answers, strict=True):
                if isinstance(answer, errors.NoScriptError) and attempt == 0:
                    missing.append(i)
                elif isinstance(answer, Exception):
                    raise self._error(answer)
                else:
                    results[i] = int(answer)
            if not missing:
                break
            try:  # Redis restarted or SCRIPT FLUSH: load the scripts again
                for script in SCRIPTS:
                    await client.script_load(script)
            except errors.RedisError as exc:
                raise self._error(exc) from None
            todo = missing
        return results

    async def _roundtrip(self, pool: Any, packed: bytes, count: int) -> list[Any]:
        """Send ``count`` packed commands on one pooled connection and read their replies (an error
        reply is returned, not raised). redis-py's pipeline packs each command in Python and reads
        each reply under a timeout of its own, which costs more than the round trip; here packing
        is a few bytes joins and the replies (all integers, or errors) are read off the connection's
        stream directly where redis-py exposes it (``_reader``; else through ``read_response``).
        A connection left with replies unread (an error, a cancellation) is disconnected before it
        goes back to the pool."""
        errors = self._redis.exceptions
        conn = await pool.get_connection()
        try:
            await conn.send_packed_command(packed, check_health=False)
            reader = getattr(conn, "_reader", None) if self._raw_replies else None
            answers: list[Any] = []
            if isinstance(reader, asyncio.StreamReader):
                for _ in range(count):
                    line = await reader.readuntil(b"\r\n")
                    if line[:1] == b":":
                        answers.append(int(line[1:-2]))
                    else:  # an error reply: "-NOSCRIPT ..." or another
                        text = line[1:-2].decode(errors="replace")
                        kind = errors.NoScriptError if text.startswith("NOSCRIPT") else errors.ResponseError
                        answers.append(kind(text))
            else:
                for _ in range(count):
                    try:
                        answers.append(await conn.read_response())
                    except errors.ResponseError as exc:  # read whole: the connection stays in step
                        answers.append(exc)
        except BaseException as exc:
            await conn.disconnect()
            if isinstance(exc, asyncio.IncompleteReadError | asyncio.LimitOverrunError | OSError):
                raise errors.ConnectionError(f"{type(exc).__name__}: {exc}") from None
            raise
        finally:
            await pool.release(conn)
        return answers

    async def claim(self, key: str, lease: float) -> Claim:
        token = new_token()
        found = await self._call((0, key, (token, _millis(lease))))
        if found == 1:
            return Claim(key, ClaimState.CLAIMED, token)
        if found == 0:
            return Claim(key, ClaimState.DONE)
        return Claim(key, ClaimState.BUSY, retry_after=max(0, -1 - found) / 1000)

    async def complete(self, claim: Claim, ttl: float) -> bool:
        done = await self._call((1, claim.key, (claim.token or "", _millis(ttl)))) == 1
        claim.completed = claim.completed or done
        return done

    async def release(self, claim: Claim) -> None:
        await self._call((2, claim.key, (claim.token or "",)))

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Any]:
        """The inbox form: a redis-py pipeline whose commands commit together with the done mark.

        Use it inside a handler wrapped by ``idempotent(store)`` with this store::

            async with store.transaction() as pipe:
                pipe.hincrby("stock", order.item, -order.quantity)   # queued, run at the end

        The commands are queued (``MULTI``) and run in one ``EXEC`` with ``SET key d PX ttl`` on
        leaving the block, while the key is ``WATCH``ed: if the claim was lost meanwhile nothing
        runs and :class:`ClaimLostError` is raised. An exception in the block discards the queue.
        """
        current = current_claim()
        if current is None or current.store is not self:
            raise polybus.ConfigurationError(
                "store.transaction() is for a handler wrapped by idempotent(store) with this same store"
            )
        client = self._open()
        claim, name = current.claim, self._prefix + current.claim.key
        errors = self._redis.exceptions
        try:
            pipeline: Any = client.pipeline(transaction=True)  # redis-py's types are partial
            async with pipeline as pipe:
                await pipe.watch(name)
                held = await pipe.get(name)
                if held is not None and held != (claim.token or "").encode():
                    raise ClaimLostError(f"the claim on {claim.key!r} ran out and another consumer took it")
                pipe.multi()
                yield pipe
                pipe.set(name, b"d", px=_millis(current.ttl))
                await pipe.execute()
        except errors.WatchError:
            raise ClaimLostError(
                f"the claim on {claim.key!r} ran out and another consumer took it: nothing was written"
            ) from None
        except errors.RedisError as exc:
            raise IdempotencyStoreError(
                f"{self!r}: {type(exc).__name__}: {polybus.redact_url(str(exc))}"
            ) from None
        claim.completed = True

    async def aclose(self) -> None:
        """Close the connections; idempotent. A closed store refuses further use."""
        if self._closed:
            return
        self._closed = True
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()
            await client.connection_pool.disconnect()
