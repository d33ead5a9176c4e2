"""The idempotency stores, each against its real backend (Redis on 6379, PostgreSQL on 5432): one body
per protocol rule on MemoryStore, RedisStore and PostgresStore; then what only one store has (Redis
TTLs, the PostgreSQL cleanup, the inbox transactions of both)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from polybus_patterns import (
    ClaimLostError,
    ClaimState,
    IdempotencyStore,
    IdempotencyStoreError,
    MemoryStore,
    PostgresStore,
    RedisStore,
    idempotent,
)

import polybus
from polybus.testing import unique_name
from polybus.testing.plugin import broker_url

POSTGRES_DSN = os.environ.get("POLYBUS_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
"""The database the PostgreSQL store's tests use (a table of their own per test, dropped after)."""


@pytest.fixture(scope="session")
def pg_dsn() -> str:
    """The test database's DSN; skips (fails under CI) when PostgreSQL does not answer."""

    async def probe() -> None:
        import asyncpg

        conn = await asyncio.wait_for(asyncpg.connect(POSTGRES_DSN), 5)
        await conn.close()

    try:
        asyncio.run(probe())
    except Exception as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL at {polybus.redact_url(POSTGRES_DSN)} is required under CI: {exc}")
        pytest.skip(f"no PostgreSQL at {polybus.redact_url(POSTGRES_DSN)}: {exc}")
    return POSTGRES_DSN


def drop_tables(tables: list[str]) -> None:
    async def drop() -> None:
        import asyncpg

        conn = await asyncpg.connect(POSTGRES_DSN)
        try:
            for table in tables:
                await conn.execute(f'DROP TABLE IF EXISTS "{table}"')
        finally:
            await conn.close()

    if tables:
        asyncio.run(drop())


@pytest.fixture(params=["memory", "redis", "postgres"])
def store_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


@pytest.fixture
def pg_table(request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh table name in the test database (skips without PostgreSQL), dropped after the test."""
    request.getfixturevalue("pg_dsn")
    name = unique_name("idem").replace("-", "_")
    yield name
    drop_tables([name, name + "_effects"])


@pytest.fixture
def make_store(store_kind: str, request: pytest.FixtureRequest) -> Iterator[Callable[..., Any]]:
    """``make_store()``: a new store of the kind under test, with keys (or a table) of its own."""
    tables: list[str] = []
    url = broker_url("redis") if store_kind == "redis" else ""
    dsn = request.getfixturevalue("pg_dsn") if store_kind == "postgres" else ""
    name = unique_name("idem").replace("-", "_")

    def make(**options: object) -> IdempotencyStore:
        if store_kind == "memory":
            return MemoryStore()
        if store_kind == "redis":
            return RedisStore(url, prefix=f"{name}:", **options)  # type: ignore[arg-type]
        tables.append(name)
        return PostgresStore(dsn, table=name, **options)  # type: ignore[arg-type]

    yield make
    drop_tables(sorted(set(tables)))


async def test_claim_complete_and_done(make_store: Callable[..., Any]) -> None:
    async with make_store() as store:
        first = await store.claim("a", 5.0)
        assert first.state is ClaimState.CLAIMED and first.token
        busy = await store.claim("a", 5.0)
        assert busy.state is ClaimState.BUSY and 3.0 < busy.retry_after <= 5.0
        assert await store.complete(first, 60.0)
        assert first.completed
        assert (await store.claim("a", 5.0)).state is ClaimState.DONE
        assert (await store.claim("b", 5.0)).state is ClaimState.CLAIMED  # keys are independent


async def test_release_lets_the_next_copy_run(make_store: Callable[..., Any]) -> None:
    async with make_store() as store:
        failed = await store.claim("k", 30.0)
        await store.release(failed)
        again = await store.claim("k", 30.0)
        assert again.state is ClaimState.CLAIMED and again.token != failed.token
        await store.release(failed)  # a stale token releases nothing
        assert (await store.claim("k", 30.0)).state is ClaimState.BUSY


async def test_a_dead_holders_claim_is_taken_over_after_its_lease(
    make_store: Callable[..., Any],
) -> None:
    async with make_store() as store:
        dead = await store.claim("k", 0.3)
        assert (await store.claim("k", 0.3)).state is ClaimState.BUSY
        await asyncio.sleep(0.5)
        heir = await store.claim("k", 30.0)
        assert heir.state is ClaimState.CLAIMED
        assert not await store.complete(dead, 60.0)  # the late holder learns it lost the key
        assert not dead.completed
        await store.release(dead)  # and cannot release the heir's claim
        assert (await store.claim("k", 30.0)).state is ClaimState.BUSY
        assert await store.complete(heir, 60.0)
        assert (await store.claim("k", 30.0)).state is ClaimState.DONE


async def test_an_overrun_claim_nobody_took_still_completes(
    make_store: Callable[..., Any],
) -> None:
    async with make_store() as store:
        slow = await store.claim("k", 0.2)
        await asyncio.sleep(0.4)
        assert await store.complete(slow, 60.0)
        assert (await store.claim("k", 1.0)).state is ClaimState.DONE


async def test_done_keys_expire_after_their_ttl(make_store: Callable[..., Any]) -> None:
    async with make_store() as store:
        claim = await store.claim("k", 5.0)
        assert await store.complete(claim, 0.3)
        assert (await store.claim("other", 5.0)).state is ClaimState.CLAIMED
        assert (await store.claim("k", 5.0)).state is ClaimState.DONE
        await asyncio.sleep(0.5)
        assert (await store.claim("k", 5.0)).state is ClaimState.CLAIMED  # forgotten: runs again


async def test_concurrent_claims_of_one_key_have_one_winner(
    make_store: Callable[..., Any],
) -> None:
    one = make_store()
    two = one if isinstance(one, MemoryStore) else make_store()  # shared ones: two pools racing
    async with one, two:
        for key in range(20):
            claims = await asyncio.gather(*(s.claim(f"k{key}", 10.0) for s in (one, two) for _ in range(5)))
            states = [c.state for c in claims]
            assert states.count(ClaimState.CLAIMED) == 1, states
            assert states.count(ClaimState.BUSY) == 9


async def test_a_closed_store_refuses_use(make_store: Callable[..., Any]) -> None:
    store = make_store()
    assert (await store.claim("k", 1.0)).state is ClaimState.CLAIMED
    await store.aclose()
    await store.aclose()  # idempotent
    with pytest.raises(polybus.ClosedError):
        await store.claim("k", 1.0)


async def test_an_unreachable_store_raises_a_typed_error_without_the_password() -> None:
    stores: list[IdempotencyStore] = [
        RedisStore("redis://:s3cret@127.0.0.1:1/0"),
        PostgresStore("postgresql://postgres:s3cret@127.0.0.1:1/test"),
    ]
    for store in stores:
        assert "s3cret" not in repr(store)
        with pytest.raises(IdempotencyStoreError) as caught:
            await store.claim("k", 1.0)
        assert "s3cret" not in str(caught.value)
        await store.aclose()


async def test_redis_keys_carry_their_expiry_in_redis() -> None:
    import redis.asyncio

    url, prefix = broker_url("redis"), unique_name("idem") + ":"
    async with RedisStore(url, prefix=prefix) as store, redis.asyncio.Redis.from_url(url) as client:
        claim = await store.claim("k", 30.0)
        assert 25_000 < await client.pttl(prefix + "k") <= 30_000
        await store.complete(claim, 3600.0)
        assert await client.get(prefix + "k") == b"d"
        assert 3_500_000 < await client.pttl(prefix + "k") <= 3_600_000


async def test_postgres_cleanup_deletes_expired_rows_in_batches_and_skips_live_ones(
    pg_dsn: str, pg_table: str
) -> None:
    import asyncpg

    dsn, table = pg_dsn, pg_table
    async with PostgresStore(dsn, table=table, cleanup_interval=None, cleanup_batch=7) as store:
        for i in range(30):
            claim = await store.claim(f"old{i}", 5.0)
            await store.complete(claim, 0.1)
        for i in range(5):
            await store.claim(f"stale{i}", 0.1)  # holders that died
        live = await store.claim("live", 60.0)
        await store.complete(await store.claim("kept", 60.0), 3600.0)
        await asyncio.sleep(0.3)
        assert await store.cleanup() == 35
        assert await store.cleanup() == 0
        conn = await asyncpg.connect(dsn)
        try:
            left = sorted(r[0] for r in await conn.fetch(f'SELECT key FROM "{table}"'))
        finally:
            await conn.close()
        assert left == ["kept", "live"]
        assert (await store.claim("live", 1.0)).state is ClaimState.BUSY
        assert live.token


async def test_postgres_background_cleanup_runs_on_its_own(pg_dsn: str, pg_table: str) -> None:
    import asyncpg

    dsn, table = pg_dsn, pg_table
    async with PostgresStore(dsn, table=table, cleanup_interval=0.2) as store:
        for i in range(10):
            await store.complete(await store.claim(f"k{i}", 5.0), 0.05)
        conn = await asyncpg.connect(dsn)
        try:
            for _ in range(50):
                if await conn.fetchval(f'SELECT count(*) FROM "{table}"') == 0:
                    break
                await asyncio.sleep(0.1)
            assert await conn.fetchval(f'SELECT count(*) FROM "{table}"') == 0
        finally:
            await conn.close()


# --- the inbox form: the handler's writes and the done mark commit together ---------------------------


async def _deliver(broker: polybus.Broker, topic: str, handler: polybus.Handler, count: int) -> None:
    """Run the wrapped ``handler`` on ``count`` deliveries of ``topic``/g, settling as the runner does."""
    async with broker.topic(topic).consumer("g") as consumer:
        for _ in range(count):
            delivery = await consumer.receive(timeout=10)
            assert delivery is not None
            try:
                await handler(delivery)
            except ValueError:
                await delivery.nack(0.05)
            else:
                if delivery.outcome is None:
                    await delivery.ack()


async def test_postgres_inbox_commits_the_handlers_writes_with_the_done_mark(
    pg_dsn: str, pg_table: str
) -> None:
    import asyncpg

    dsn, table = pg_dsn, pg_table
    effects = table + "_effects"
    conn = await asyncpg.connect(dsn)
    await conn.execute(f'CREATE TABLE "{effects}" (n int)')
    try:
        async with PostgresStore(dsn, table=table) as store, polybus.connect("memory://") as broker:
            runs = 0

            async def handler(delivery: polybus.Delivery) -> None:
                nonlocal runs
                runs += 1
                async with store.transaction() as tx:
                    await tx.execute(f'INSERT INTO "{effects}" VALUES ($1)', int(delivery.text()))
                    if runs == 1:
                        raise ValueError("fails once, after writing: the write rolls back")

            topic = unique_name("inbox")
            await broker.topic(topic).consumer("g").open()  # the group exists before the sends
            same = polybus.Message.of("7")
            async with broker.topic(topic).producer() as producer:
                await producer.send_many([same, same, polybus.Message.of("8")])
            # 3 sends + 1 redelivery of the failed first one
            await _deliver(broker, topic, idempotent(store, lease=5.0, ttl=600)(handler), 4)
            assert sorted(r[0] for r in await conn.fetch(f'SELECT n FROM "{effects}"')) == [7, 8]
            assert runs == 3  # failed, retried, 8; the second copy of 7 was skipped as done
    finally:
        await conn.close()


async def test_redis_inbox_runs_the_handlers_commands_with_the_done_mark() -> None:
    import redis.asyncio

    url, prefix = broker_url("redis"), unique_name("idem") + ":"
    counter = prefix + "effects"
    async with (
        RedisStore(url, prefix=prefix) as store,
        polybus.connect("memory://") as broker,
        redis.asyncio.Redis.from_url(url) as client,
    ):
        runs = 0

        async def handler(delivery: polybus.Delivery) -> None:
            nonlocal runs
            runs += 1
            async with store.transaction() as pipe:
                pipe.hincrby(counter, delivery.text(), 1)
                if runs == 1:
                    raise ValueError("fails once: the queued command never runs")

        topic = unique_name("inbox")
        await broker.topic(topic).consumer("g").open()
        same = polybus.Message.of("7")
        async with broker.topic(topic).producer() as producer:
            await producer.send_many([same, same, polybus.Message.of("8")])
        await _deliver(broker, topic, idempotent(store, lease=5.0, ttl=600)(handler), 4)
        assert await client.hgetall(counter) == {b"7": b"1", b"8": b"1"}
        assert runs == 3
        await client.delete(counter)


@pytest.mark.parametrize("store_kind", ["redis", "postgres"])
async def test_an_inbox_whose_claim_was_lost_writes_nothing(
    store_kind: str, pg_dsn: str, pg_table: str
) -> None:
    import redis.asyncio

    name = pg_table
    store: RedisStore | PostgresStore = (
        RedisStore(broker_url("redis"), prefix=name + ":")
        if store_kind == "redis"
        else PostgresStore(pg_dsn, table=name)
    )
    async with store, polybus.connect("memory://") as broker:
        writes: list[str] = []

        async def slow(delivery: polybus.Delivery) -> None:
            async with store.transaction() as tx:
                await asyncio.sleep(0.5)  # the lease of 0.2 s runs out; another consumer takes over
                heir = await store.claim(f"{delivery.topic}|g|{delivery.id}", 30.0)
                assert heir.state is ClaimState.CLAIMED
                if isinstance(store, RedisStore):
                    tx.set(name + ":written", b"1")
                else:
                    await tx.execute("SELECT 1")
                writes.append(delivery.id)

        topic = unique_name("inbox")
        await broker.topic(topic).consumer("g").open()
        async with broker.topic(topic).producer() as producer:
            await producer.send(b"x")
        async with broker.topic(topic).consumer("g") as consumer:
            delivery = await consumer.receive(timeout=5)
            assert delivery is not None
            with pytest.raises(ClaimLostError):
                await idempotent(store, lease=0.2, ttl=600)(slow)(delivery)
        assert writes  # the block ran, and its commit was refused
        if isinstance(store, RedisStore):
            async with redis.asyncio.Redis.from_url(broker_url("redis")) as client:
                assert await client.get(name + ":written") is None


async def test_the_inbox_needs_the_middleware() -> None:
    store = RedisStore(broker_url("redis"))
    with pytest.raises(polybus.ConfigurationError):
        async with store.transaction():
            pass
    await store.aclose()


async def test_a_memory_store_sweeps_out_what_expired() -> None:
    store = MemoryStore()
    for i in range(3000):
        await store.complete(await store.claim(f"old{i}", 5.0), 0.05)
    await asyncio.sleep(0.1)
    for i in range(3000):
        await store.claim(f"new{i}", 5.0)
    assert len(store) < 4000  # the 3,000 expired ones were swept out on the way
    assert (await store.claim("old1", 5.0)).state is ClaimState.CLAIMED


async def test_a_redis_store_loads_its_scripts_again_after_a_script_flush() -> None:
    import redis.asyncio

    url = broker_url("redis")
    async with RedisStore(url, prefix=unique_name("idem") + ":") as store:
        first = await store.claim("k", 5.0)
        async with redis.asyncio.Redis.from_url(url) as client:
            await client.script_flush()
        assert await store.complete(first, 60.0)
        assert (await store.claim("k", 5.0)).state is ClaimState.DONE


@pytest.mark.parametrize("raw", [True, False], ids=["raw-replies", "read_response"])
async def test_redis_store_reads_replies_both_ways(raw: bool) -> None:
    """The fast path reads replies off redis-py's stream reader; the fallback uses its public
    ``read_response``. Both give the same answers, errors included (a lost script)."""
    import redis.asyncio

    url = broker_url("redis")
    store = RedisStore(url, prefix=unique_name("idem") + ":")
    store._raw_replies = raw
    async with store:
        claims = await asyncio.gather(*(store.claim(f"k{i % 3}", 5.0) for i in range(9)))
        assert sorted(c.state.value for c in claims).count("claimed") == 3
        async with redis.asyncio.Redis.from_url(url) as client:
            await client.script_flush()
        done = [c for c in claims if c.state is ClaimState.CLAIMED]
        assert await asyncio.gather(*(store.complete(c, 60.0) for c in done)) == [True, True, True]
        pool = store._open().connection_pool
        conn = await pool.get_connection()
        try:  # the fast path is taken with this redis-py: an upgrade that hides it fails here
            assert isinstance(getattr(conn, "_reader", None), asyncio.StreamReader)
        finally:
            await pool.release(conn)
