"""The cost of the App: a typed pydantic handler run by ``polybus.App`` against the bare loop.

    uv run --all-packages python bench/app.py                       # memory and redis
    uv run --all-packages python bench/app.py --broker redis --messages 50000 --repeat 5

Each round publishes ``--messages`` JSON orders to a fresh topic whose group already exists, then
drains them one way, timing from the first receive to the last ack:

- ``bare``: ``consumer.receive()`` + ``delivery.ack()``, the body left undecoded;
- ``bare+decode``: the same loop, ``Order.model_validate_json`` on each body (what the App does);
- ``app``: ``@app.subscribe(...) async def handle(order: Order) -> None``, concurrency 1, run by
  ``App.run`` (decode, call, ack, through the runner);
- ``app+retry``: the same App with ``polybus_patterns.retry(RetryPolicy())`` (and, where
  polybus-patterns has it, ``idempotent(MemoryStore())`` too: ``app+retry+idem``); no handler fails,
  so this is the middleware's cost on the happy path.

Rounds rotate which one goes first; the table shows the median rate of each and the ratio app/bare.
The broker URL comes from ``--url``, else is found or started by ``polybus.testing.provision``.
``--clock cpu`` times with this process's CPU time instead of the wall clock: steadier on a shared
machine, and the same thing for memory:// (all its work is in this process), but it leaves out a
real broker's time.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable

import pydantic

import polybus
from polybus.testing import unique_name

clock = time.perf_counter


class Order(pydantic.BaseModel):
    id: int
    customer: str
    total: float
    lines: list[str]


async def _prepare(broker: polybus.Broker, messages: int) -> tuple[str, polybus.Consumer]:
    topic = broker.topic(unique_name("bench-app"))
    consumer = topic.consumer("g")
    await consumer.open()
    body = Order(id=1, customer="c-42", total=99.5, lines=["a", "b", "c"])
    async with topic.producer() as producer:
        for start in range(0, messages, 1000):
            await producer.send_many([body] * min(1000, messages - start))
    return topic.name, consumer


async def bare(broker: polybus.Broker, messages: int, decode: bool) -> float:
    _, consumer = await _prepare(broker, messages)
    validate = Order.model_validate_json
    began = clock()
    for _ in range(messages):
        delivery = await consumer.receive(timeout=30)
        assert delivery is not None, "the backlog ran dry"
        if decode:
            validate(delivery.body)
        await delivery.ack()
    took = clock() - began
    await consumer.aclose()
    return messages / took


def _middlewares(idem: bool) -> list[polybus.Middleware]:
    import polybus_patterns as patterns

    chosen = [patterns.retry(patterns.RetryPolicy())]
    if idem:
        chosen.append(patterns.idempotent(patterns.MemoryStore()))  # type: ignore[attr-defined]
    return chosen


def _has_idempotent() -> bool:
    import polybus_patterns as patterns

    return hasattr(patterns, "idempotent") and hasattr(patterns, "MemoryStore")


async def app(
    broker: polybus.Broker, messages: int, middlewares: list[polybus.Middleware] | None = None
) -> float:
    name = unique_name("bench-app")
    done = asyncio.Event()
    count = 0
    service = polybus.App(middlewares=middlewares or [])

    @service.subscribe(name, group="g")
    async def handle(order: Order) -> None:
        nonlocal count
        count += 1
        if count == messages:
            done.set()

    consumers = await service.start(broker)
    body = Order(id=1, customer="c-42", total=99.5, lines=["a", "b", "c"])
    async with broker.topic(name).producer() as producer:
        for start in range(0, messages, 1000):
            await producer.send_many([body] * min(1000, messages - start))
    stop = asyncio.Event()
    began = clock()
    runner = asyncio.create_task(service.run(broker, stop=stop, consumers=consumers))
    await asyncio.wait_for(done.wait(), 300)
    took = clock() - began
    stop.set()
    await runner
    return messages / took


async def measure(url: str, messages: int, repeat: int) -> dict[str, list[float]]:
    kinds: dict[str, Callable[[polybus.Broker], Awaitable[float]]] = {
        "bare": lambda b: bare(b, messages, decode=False),
        "bare+decode": lambda b: bare(b, messages, decode=True),
        "app": lambda b: app(b, messages),
        "app+retry": lambda b: app(b, messages, _middlewares(idem=False)),
    }
    if _has_idempotent():
        kinds["app+retry+idem"] = lambda b: app(b, messages, _middlewares(idem=True))
    rates: dict[str, list[float]] = {k: [] for k in kinds}
    order = list(kinds)
    async with polybus.connect(url) as broker:
        await kinds["bare"](broker)  # warm up (connections, caches)
        for round_ in range(repeat):
            turn = round_ % len(order)
            for kind in order[turn:] + order[:turn]:
                rates[kind].append(await kinds[kind](broker))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--broker", action="append", help="memory or a real broker (repeatable)")
    parser.add_argument("--url", help="the broker URL (with a single --broker)")
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    args = parser.parse_args()
    global clock
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    brokers = args.broker or ["memory", "redis"]
    print(f"{args.messages} messages per run, median of {args.repeat} runs (msg/s, {args.clock} clock)\n")
    extra = ["app+retry", "app+retry+idem"] if _has_idempotent() else ["app+retry"]
    print(
        "| broker | bare receive+ack | bare + decode | App, typed handler | App / bare | App / bare+decode | "
        + " | ".join(f"{k} | {k} / App" for k in extra)
        + " |"
    )
    print("|---|---|---|---|---|---|" + "---|---|" * len(extra))
    for name in brokers:
        if args.url:
            url = args.url
        elif name == "memory":
            url = "memory://"
        else:
            from polybus.testing import provision

            url = provision.acquire(name).url
        rates = asyncio.run(measure(url, args.messages, args.repeat))
        med = {k: statistics.median(v) for k, v in rates.items()}
        print(
            f"| {name} | {med['bare']:,.0f} | {med['bare+decode']:,.0f} | {med['app']:,.0f} | "
            f"{med['app'] / med['bare']:.2f}x | {med['app'] / med['bare+decode']:.2f}x | "
            + " | ".join(f"{med[k]:,.0f} | {med[k] / med['app']:.2f}x" for k in extra)
            + " |"
        )


if __name__ == "__main__":
    main()
