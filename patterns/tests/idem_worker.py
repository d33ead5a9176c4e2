"""A consumer process of the idempotency SIGKILL test (not a test module).

    python idem_worker.py BROKER_URL TOPIC GROUP STORE_URL NAME LEASE

Runs an App whose one subscription is wrapped by ``idempotent(store, key=<the "order" header>,
lease=LEASE)``; ``STORE_URL`` is ``redis://...`` (a ``RedisStore`` with prefix ``NAME:``) or
``postgresql://...`` (a ``PostgresStore`` with table ``NAME``). The handler's side effect is written
by the inbox form, in the store's own database: ``HINCRBY NAME:effects <order> 1`` in Redis, or a row
``(order)`` in the table ``NAME_effects``. Prints ``READY`` once its consumer is in the group, and
runs until killed (or until SIGTERM, which stops it gracefully).
"""

from __future__ import annotations

import asyncio
import signal
import sys

from polybus_patterns import PostgresStore, RedisStore, idempotent

import polybus


async def main(url: str, topic: str, group: str, store_url: str, name: str, lease: float) -> None:
    redis_store = store_url.startswith("redis")
    store = RedisStore(store_url, prefix=name + ":") if redis_store else PostgresStore(store_url, table=name)
    app = polybus.App(middlewares=[idempotent(store, key=lambda d: d.headers["order"], lease=lease, ttl=600)])

    @app.subscribe(topic, group=group, concurrency=4, retry_delay=0.2)
    async def handle(delivery: polybus.Delivery) -> None:
        order = delivery.headers["order"]
        if isinstance(store, RedisStore):
            async with store.transaction() as pipe:
                pipe.hincrby(f"{name}:effects", order, 1)
        else:
            async with store.transaction() as conn:
                await conn.execute(f'INSERT INTO "{name}_effects" (key) VALUES ($1)', order)

    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with store, polybus.connect(url) as broker:
        consumers = await app.start(broker)
        print("READY", flush=True)
        await app.run(broker, stop=stop, consumers=consumers, grace_period=5)


if __name__ == "__main__":
    url, topic, group, store_url, name, lease = sys.argv[1:7]
    asyncio.run(main(url, topic, group, store_url, name, float(lease)))
