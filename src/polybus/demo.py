"""The order-processing demo behind ``polybus demo``: one topic, two groups, one retried order.

Orders go to the ``orders`` topic. Billing and e-mail are two groups, so each sees every order
(fan-out). Billing fails order #3 on its first attempt and asks for a redelivery with
``nack(delay=0.5)``; the broker hands it back and the second attempt succeeds. Runs on any
broker URL; ``examples/05_order_processing.py`` runs it as a script. Imports the public API only.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable

import pydantic

import polybus

__all__ = ["Order", "run_demo"]


class Order(pydantic.BaseModel):
    """An order as the shop sends it."""

    id: int
    customer: str
    amount: float


ORDERS = [
    Order(id=1, customer="ada", amount=12.5),
    Order(id=2, customer="grace", amount=30.0),
    Order(id=3, customer="alan", amount=99.9),
    Order(id=4, customer="ada", amount=5.0),
    Order(id=5, customer="edsger", amount=42.0),
]


async def run_demo(
    url: str = "memory://", *, out: Callable[[str], None] = print, timeout: float = 60.0
) -> int:
    """Run the demo on ``url``; return 0 when every order was billed and e-mailed exactly as told."""
    started = time.monotonic()
    topic_name = f"demo-orders-{uuid.uuid4().hex[:8]}"
    billed: dict[int, int] = {}
    emailed: set[int] = set()
    finished = asyncio.Event()
    app = polybus.App()

    def say(who: str, text: str) -> None:
        out(f"{time.monotonic() - started:6.2f}s  {who:<8} {text}")

    def check_done() -> None:
        if len(billed) == len(ORDERS) and len(emailed) == len(ORDERS):
            finished.set()

    @app.subscribe(topic_name, group="billing")
    async def bill(delivery: polybus.Delivery) -> None:
        order = delivery.decode(Order)
        if order.id == 3 and delivery.attempt == 1:
            say("billing", f"order #{order.id}: card declined (attempt 1), asking for a redelivery in 0.5s")
            await delivery.nack(delay=0.5)
            return
        billed[order.id] = delivery.attempt
        say(
            "billing",
            f"order #{order.id}: charged {order.amount:.2f} to {order.customer} (attempt {delivery.attempt})",
        )
        check_done()

    @app.subscribe(topic_name, group="email")
    async def email(delivery: polybus.Delivery) -> None:
        order = delivery.decode(Order)
        emailed.add(order.id)
        say("email", f"order #{order.id}: confirmation sent to {order.customer}")
        check_done()

    async with polybus.connect(url) as broker:
        say("demo", f"broker {broker.display_url}, topic {topic_name}, groups billing + email")
        consumers = await app.start(broker)  # join both groups before the first order is sent
        stop = asyncio.Event()
        running = asyncio.create_task(app.run(broker, stop=stop, consumers=consumers))
        topic = broker.topic(topic_name)
        async with topic.producer() as producer:
            for order in ORDERS:
                await producer.send(order, key=order.customer)
                say("shop", f"order #{order.id} placed ({order.amount:.2f}, {order.customer})")
        try:
            await asyncio.wait_for(finished.wait(), timeout)
        except TimeoutError:
            say("demo", f"gave up after {timeout:.0f}s")
        stop.set()
        await running
        await topic.delete()
    ok = len(billed) == len(ORDERS) and len(emailed) == len(ORDERS) and billed.get(3) == 2
    say(
        "demo",
        f"billed {len(billed)}/{len(ORDERS)}, e-mailed {len(emailed)}/{len(ORDERS)}, "
        f"order #3 billed on attempt {billed.get(3)}: {'OK' if ok else 'INCOMPLETE'}",
    )
    return 0 if ok else 1
