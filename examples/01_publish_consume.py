"""Send a message and receive it. Run on any broker: POLYBUS_URL=redis://localhost:6379 python ...

The consumer joins its group *before* the send: a group receives every message sent after it exists.
"""

import argparse
import asyncio
import os

import polybus


async def main(url: str) -> None:
    async with polybus.connect(url) as broker:
        topic = broker.topic("greetings")
        async with topic.consumer("printer") as consumer, topic.producer() as producer:
            message_id = await producer.send({"hello": "world"}, headers={"lang": "en"})
            print("sent", message_id)
            delivery = await consumer.receive(timeout=10)
            assert delivery is not None, "nothing arrived"
            print("received", delivery.json(), delivery.headers["lang"], "attempt", delivery.attempt)
            await delivery.ack()  # ack only after the work is done: at-least-once
            print("OK")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("POLYBUS_URL", "memory://"), help="broker URL")
    asyncio.run(main(parser.parse_args().url))
