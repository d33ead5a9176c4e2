"""Fan-out to three groups: declare the topology first, then send; every group gets every message.

A group receives what is sent *after* it exists, and services often start after the first messages
are sent: so the topology is declared before the first send. A recipient list then sends each
price change to two topics at once, returning when both confirmations are in.

Run on any broker: python examples/06_fan_out_to_three_groups.py --url redis://localhost:6379
"""

import argparse
import asyncio
import os

from polybus_patterns import RecipientList, declare

import polybus

TOPOLOGY = {"price-changes": ["web-shop", "search-index", "newsletter"], "audit-log": ["archive"]}
N = 10


async def service(broker: polybus.Broker, topic: str, group: str) -> str:
    async with broker.topic(topic).consumer(group) as consumer:  # a service that starts late
        for seen in range(N):
            delivery = await consumer.receive(timeout=15)
            assert delivery is not None, f"{group}: only {seen} of {N} arrived"
            await delivery.ack()
    return f"{group} {N}"


async def main(url: str) -> None:
    async with polybus.connect(url) as broker:
        await declare(broker, TOPOLOGY)  # every group exists before the first send
        async with RecipientList(broker, ["price-changes", "audit-log"]) as recipients:
            for i in range(N):
                ids = await recipients.send({"sku": f"sku-{i}", "price": 9.5 + i}, key=f"sku-{i}")
        print("last one sent as", ", ".join(f"{topic} {id_[:8]}" for topic, id_ in ids.items()))
        got = await asyncio.gather(*(service(broker, t, g) for t, groups in TOPOLOGY.items() for g in groups))
        print("OK received:", ", ".join(got))
        for topic in TOPOLOGY:  # an example cleans up; a real service keeps its topics
            await broker.topic(topic).delete()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("POLYBUS_URL", "memory://"), help="broker URL")
    asyncio.run(main(parser.parse_args().url))
