"""Run by test_killed_process.py: consume, ack some, hold the rest, then wait to be killed.

Usage: python _child_consumer.py URL TOPIC GROUP ACK HOLD
"""

from __future__ import annotations

import asyncio
import sys

import polybus


async def main(url: str, topic_name: str, group: str, ack: int, hold: int) -> None:
    broker = polybus.connect(url, commit_interval=0.01)
    async with broker, broker.topic(topic_name).consumer(group, prefetch=ack + hold) as consumer:
        print("JOINED", flush=True)
        held = []
        while len(held) < ack + hold:
            d = await consumer.receive(timeout=30)
            if d is None:
                print("TIMEOUT", flush=True)
                return
            held.append(d)
            if len(held) <= ack:
                await d.ack()
                print("ACKED", d.text(), flush=True)
        await asyncio.sleep(0.5)  # let the coalesced commit go out
        print("READY", flush=True)
        await asyncio.sleep(3600)  # killed here, holding `hold` deliveries unsettled


if __name__ == "__main__":
    url, topic_name, group, ack, hold = sys.argv[1:6]
    asyncio.run(main(url, topic_name, group, int(ack), int(hold)))
