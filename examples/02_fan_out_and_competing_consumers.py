"""Two groups each get every message (fan-out); two consumers in one group share them (competing).

Run on any broker: POLYBUS_URL=nats://localhost:4222 python examples/02_...py (or --url URL)
"""

import argparse
import asyncio
import collections
import os

import polybus

N = 20


async def drain(consumer: polybus.Consumer, seen: collections.Counter[str], name: str) -> None:
    while (delivery := await consumer.receive(timeout=1.0)) is not None:
        seen[name] += 1
        await delivery.ack()


async def main(url: str) -> None:
    async with polybus.connect(url) as broker:
        topic = broker.topic("events")
        audit = topic.consumer("audit")
        workers = [topic.consumer("work", prefetch=1) for _ in range(2)]
        await asyncio.gather(*(c.open() for c in (audit, *workers)))  # join the groups before sending
        async with topic.producer() as producer:
            await producer.send_many([{"n": i} for i in range(N)])
        seen: collections.Counter[str] = collections.Counter()
        await asyncio.gather(
            drain(audit, seen, "audit"), *(drain(w, seen, f"worker-{i}") for i, w in enumerate(workers))
        )
        assert seen["audit"] == N and seen["worker-0"] + seen["worker-1"] >= N
        print("OK", dict(seen))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("POLYBUS_URL", "memory://"), help="broker URL")
    asyncio.run(main(parser.parse_args().url))
