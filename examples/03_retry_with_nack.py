"""A handler that fails is retried later with nack(delay); other messages are not held up meanwhile.

Run on any broker: POLYBUS_URL=amqp://guest:guest@localhost:5672/ python examples/03_...py (or --url URL)
"""

import argparse
import asyncio
import os

import polybus


async def main(url: str) -> None:
    async with polybus.connect(url) as broker:
        topic = broker.topic("payments")
        async with topic.consumer("charger") as consumer, topic.producer() as producer:
            await producer.send_many([{"payment": 1, "flaky": True}, {"payment": 2, "flaky": False}])
            done = 0
            while done < 2:
                delivery = await consumer.receive(timeout=10)
                assert delivery is not None, "nothing arrived"
                payment = delivery.json()
                if payment["flaky"] and delivery.attempt == 1:
                    print(f"payment {payment['payment']}: gateway timeout, retry in 1s")
                    await delivery.nack(delay=1.0)
                    continue
                print(f"payment {payment['payment']}: charged on attempt {delivery.attempt}")
                await delivery.ack()
                done += 1
            print("OK both payments charged")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("POLYBUS_URL", "memory://"), help="broker URL")
    asyncio.run(main(parser.parse_args().url))
