"""A pipeline of two typed services: orders -> bill -> invoices -> mail.

A handler's first parameter says how the body is decoded (here pydantic models); a body that
does not validate never reaches it (it is rejected, the reason logged). What ``bill`` returns is
published to ``invoices``, keeping the order's key, with the order's id in a causation header.

Run on any broker: python examples/07_typed_pipeline.py --url kafka://localhost:9092
"""

import argparse
import asyncio
import os

from pydantic import BaseModel

import polybus

N = 20


class Order(BaseModel):
    id: int
    customer: str
    total: float


class Invoice(BaseModel):
    order_id: int
    customer: str
    amount: float


app = polybus.App()
mailed: dict[int, str] = {}  # order id -> the id of the order message it came from
all_mailed = asyncio.Event()


@app.subscribe("orders", group="billing", concurrency=8, publish_to="invoices")
async def bill(order: Order) -> Invoice:
    return Invoice(order_id=order.id, customer=order.customer, amount=round(order.total * 1.2, 2))


@app.subscribe("invoices", group="mailer")
async def mail(invoice: Invoice, delivery: polybus.Delivery) -> None:
    mailed[invoice.order_id] = delivery.headers[polybus.CAUSATION_HEADER]
    if len(mailed) == N:
        all_mailed.set()


async def main(url: str) -> None:
    async with polybus.connect(url) as broker:
        consumers = await app.start(broker)  # both groups joined before the first order is sent
        stop = asyncio.Event()
        service = asyncio.create_task(app.run(broker, stop=stop, consumers=consumers))
        orders = [Order(id=i, customer=f"c{i % 4}", total=10.0 + i) for i in range(N)]
        async with broker.topic("orders").producer() as producer:
            await producer.send(b"this is not an order")  # rejected: never reaches bill
            ids = await producer.send_many([polybus.Message.of(o, key=o.customer) for o in orders])
        await asyncio.wait_for(all_mailed.wait(), 30)
        stop.set()
        await service
        assert sorted(mailed) == list(range(N)) and set(mailed.values()) == set(ids)
        print(
            f"OK {N} orders billed and mailed, each invoice traced to its order; the malformed one rejected"
        )
        for topic in ("orders", "invoices"):  # an example cleans up; a real service keeps its topics
            await broker.topic(topic).delete()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("POLYBUS_URL", "memory://"), help="broker URL")
    asyncio.run(main(parser.parse_args().url))
