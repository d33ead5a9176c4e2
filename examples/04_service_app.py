"""A service with polybus.App: handlers are plain async functions, middleware wraps them.

A handler that returns has its message acked; one that raises has it redelivered after
``retry_delay``. Run on any broker: POLYBUS_URL=kafka://localhost:9092 python examples/04_...py
"""

import argparse
import asyncio
import os
import time

import polybus


def timing(handler: polybus.Handler) -> polybus.Handler:
    async def timed(delivery: polybus.Delivery) -> None:
        started = time.perf_counter()
        await handler(delivery)
        print(f"  handled {delivery.id[:8]} in {(time.perf_counter() - started) * 1000:.1f} ms")

    return timed


app = polybus.App(middlewares=[timing])
seen: list[int] = []
all_seen = asyncio.Event()


@app.subscribe("signups", group="welcome", concurrency=2)
async def welcome(delivery: polybus.Delivery) -> None:
    seen.append(delivery.json()["user"])
    if len(seen) == 5:
        all_seen.set()


async def main(url: str) -> None:
    async with polybus.connect(url) as broker:
        consumers = await app.start(broker)
        stop = asyncio.Event()
        service = asyncio.create_task(app.run(broker, stop=stop, consumers=consumers))
        async with broker.topic("signups").producer() as producer:
            await producer.send_many([{"user": i} for i in range(5)])
        await asyncio.wait_for(all_seen.wait(), 30)
        stop.set()
        await service
        print("OK welcomed", sorted(seen))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("POLYBUS_URL", "memory://"), help="broker URL")
    asyncio.run(main(parser.parse_args().url))
