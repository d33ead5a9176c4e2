"""The cost of the idempotent consumer: an App with ``idempotent(store)`` against the same App without.

    uv run --all-packages python bench/idempotent.py                       # memory and redis brokers
    uv run --all-packages python bench/idempotent.py --broker redis --messages 50000 --repeat 5

Each run publishes ``--messages`` JSON orders (distinct ids) to a fresh topic whose group exists, then
times an App draining them, from its start to the last handler call:

- concurrency 1: no middleware, ``idempotent(MemoryStore())``, and (once ``polybus_patterns.retry``
  exists) ``retry(...)`` + ``idempotent(MemoryStore())``: the ratio to no middleware (goal >= 0.8x);
- concurrency 32: no middleware, ``idempotent(RedisStore(...))`` (goal >= 10,000 msg/s on the Redis
  broker) and ``idempotent(PostgresStore(...))`` (goal >= 2,000 msg/s).

The ratio is given twice: by the wall clock, and by this process's CPU time while draining (on a
machine shared with other work, the CPU ratio is the steadier one: the other work slows the wall
clock of both sides, unevenly). Every store starts empty for each run (a fresh key prefix or
table), so every message is claimed and completed: the worst case, no duplicates skipped. Runs
rotate which goes first; the table shows medians. The Redis store uses the Redis on ``--redis``
(default: the broker's, else 127.0.0.1:6379), the PostgreSQL store ``--postgres`` (default
``postgresql://postgres@127.0.0.1:5432/test``).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Callable

import polybus_patterns
import pydantic
from polybus_patterns import MemoryStore, PostgresStore, RedisStore, idempotent

import polybus
from polybus.testing import unique_name


class Order(pydantic.BaseModel):
    id: int
    customer: str
    total: float
    lines: list[str]


Stack = Callable[[str], tuple[list[polybus.Middleware], list[object]]]
"""Given a fresh name: the middlewares of one run and the stores to close after it."""


async def app_rate(
    broker: polybus.Broker, messages: int, concurrency: int, stack: Stack
) -> tuple[float, float]:
    """(msg/s by the wall clock, msg per CPU-second of this process) draining ``messages``."""
    name = unique_name("bench-idem")
    middlewares, stores = stack(name.replace("-", "_"))
    done = asyncio.Event()
    count = 0
    service = polybus.App(middlewares=middlewares)

    @service.subscribe(name, group="g", concurrency=concurrency)
    async def handle(order: Order) -> None:
        nonlocal count
        count += 1
        if count == messages:
            done.set()

    consumers = await service.start(broker)
    body = Order(id=1, customer="c-42", total=99.5, lines=["a", "b", "c"])
    async with broker.topic(name).producer() as producer:
        for start in range(0, messages, 1000):
            await producer.send_many([body] * min(1000, messages - start))
    for store in stores:  # connect before the clock starts (pools, tables)
        if isinstance(store, PostgresStore):
            await store.__aenter__()
    stop = asyncio.Event()
    began, cpu = time.perf_counter(), time.process_time()
    runner = asyncio.create_task(service.run(broker, stop=stop, consumers=consumers))
    await asyncio.wait_for(done.wait(), 600)
    took, cpu_took = time.perf_counter() - began, time.process_time() - cpu
    stop.set()
    await runner
    for store in stores:
        await store.aclose()  # type: ignore[attr-defined]
        if isinstance(store, PostgresStore):
            await _drop(store)
    await broker.topic(name).delete()
    return messages / took, messages / cpu_took


async def _drop(store: PostgresStore) -> None:
    import asyncpg

    conn = await asyncpg.connect(store_dsn)
    await conn.execute(f'DROP TABLE IF EXISTS "{store.table}"')
    await conn.close()


store_dsn = "postgresql://postgres@127.0.0.1:5432/test"


def stacks(redis_url: str) -> dict[str, tuple[int, Stack]]:
    def plain(name: str) -> tuple[list[polybus.Middleware], list[object]]:
        return [], []

    def memory(name: str) -> tuple[list[polybus.Middleware], list[object]]:
        return [idempotent(MemoryStore())], []

    def redis(name: str) -> tuple[list[polybus.Middleware], list[object]]:
        store = RedisStore(redis_url, prefix=name + ":")
        return [idempotent(store, ttl=600)], [store]

    def postgres(name: str) -> tuple[list[polybus.Middleware], list[object]]:
        store = PostgresStore(store_dsn, table=name, cleanup_interval=None)
        return [idempotent(store, ttl=600)], [store]

    def passthrough(name: str) -> tuple[list[polybus.Middleware], list[object]]:
        def wrap(handler: polybus.Handler) -> polybus.Handler:
            async def wrapped(delivery: polybus.Delivery) -> None:
                await handler(delivery)

            return wrapped

        return [wrap], []

    kinds: dict[str, tuple[int, Stack]] = {
        "none c1": (1, plain),
        "pass-through c1": (1, passthrough),
        "memory c1": (1, memory),
    }
    if hasattr(polybus_patterns, "retry"):  # the retry middleware of the same issue, once merged
        retry, policy = polybus_patterns.retry, getattr(polybus_patterns, "RetryPolicy")  # noqa: B009

        def retried(name: str) -> tuple[list[polybus.Middleware], list[object]]:
            return [retry(policy(max_attempts=4)), idempotent(MemoryStore())], []

        kinds["retry+memory c1"] = (1, retried)
    kinds.update({"none c32": (32, plain), "redis c32": (32, redis), "postgres c32": (32, postgres)})
    return kinds


async def measure(
    url: str, redis_url: str, messages: int, repeat: int, only: list[str] | None = None
) -> dict[str, list[tuple[float, float]]]:
    kinds = stacks(redis_url)
    if only:
        kinds = {k: v for k, v in kinds.items() if k in only or k == "none c1"}
    rates: dict[str, list[tuple[float, float]]] = {k: [] for k in kinds}
    order = list(kinds)
    async with polybus.connect(url) as broker:
        await app_rate(broker, min(messages, 2000), 1, kinds["none c1"][1])  # warm up
        for round_ in range(repeat):
            shift = round_ % len(order)
            for kind in order[shift:] + order[:shift]:
                concurrency, stack = kinds[kind]
                rates[kind].append(await app_rate(broker, messages, concurrency, stack))
    return rates


def main() -> None:
    global store_dsn
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--broker", action="append", help="memory or a real broker (repeatable)")
    parser.add_argument("--url", help="the broker URL (with a single --broker)")
    parser.add_argument("--redis", help="the Redis of RedisStore")
    parser.add_argument("--postgres", default=store_dsn, help="the PostgreSQL of PostgresStore")
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", action="append", help="run only these kinds ('memory c1'...)")
    args = parser.parse_args()
    store_dsn = args.postgres
    brokers = args.broker or ["memory", "redis"]
    print(f"{args.messages} messages per run, median of {args.repeat} runs (msg/s)\n")
    header = None
    for name in brokers:
        if args.url:
            url = args.url
        elif name == "memory":
            url = "memory://"
        else:
            from polybus.testing import provision

            url = provision.acquire(name).url
        redis_url = args.redis or (url if url.startswith("redis") else "redis://127.0.0.1:6379/0")
        rates = asyncio.run(measure(url, redis_url, args.messages, args.repeat, args.only))
        med = {k: statistics.median(r for r, _ in v) for k, v in rates.items()}
        cpu = {k: statistics.median(c for _, c in v) for k, v in rates.items()}
        if header is None:
            header = list(med)
            print("| broker | " + " | ".join(header) + " | memory c1 / none c1 (wall, CPU) |")
            print("|---" * (len(header) + 2) + "|")
        cells = " | ".join(f"{med[k]:,.0f}" for k in header)
        ratio = med["memory c1"] / med["none c1"] if "memory c1" in med else float("nan")
        cpu_ratio = cpu["memory c1"] / cpu["none c1"] if "memory c1" in cpu else float("nan")
        print(f"| {name} | {cells} | {ratio:.2f}x, {cpu_ratio:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
