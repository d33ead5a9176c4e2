"""A consumer process for the contract case that SIGKILLs one: it takes deliveries and holds them.

    python -m polybus.testing._held_consumer URL TOPIC GROUP ACK HOLD

It receives ``ACK + HOLD`` deliveries of ``GROUP``, acks the first ``ACK``, waits a second for the
acks to leave (adapters may coalesce them), prints ``HOLDING id id ...`` (the ids it has not
settled) and sleeps until it is killed. It prints ``TIMEOUT`` and exits 2 when the deliveries do
not come. Imports polybus only, so that it starts fast.
"""

from __future__ import annotations

import asyncio
import sys

import polybus

ACKS_LEAVE = 1.0
"""Seconds between the last ack and ``HOLDING``: a coalesced ack or commit is sent by then."""


async def main(url: str, topic: str, group: str, ack: int, hold: int) -> int:
    async with (
        polybus.connect(url) as broker,
        broker.topic(topic).consumer(group, prefetch=ack + hold) as consumer,
    ):
        held: list[polybus.Delivery] = []
        while len(held) < ack + hold:
            delivery = await consumer.receive(timeout=60)
            if delivery is None:
                print("TIMEOUT", flush=True)
                return 2
            held.append(delivery)
        for delivery in held[:ack]:
            await delivery.ack()
        await asyncio.sleep(ACKS_LEAVE)
        print("HOLDING", *(d.id for d in held[ack:]), flush=True)
        await asyncio.sleep(3600)  # killed here, holding the rest unsettled
    return 0


if __name__ == "__main__":
    url, topic, group, ack, hold = sys.argv[1:6]
    sys.exit(asyncio.run(main(url, topic, group, int(ack), int(hold))))
