"""Request-reply round trips beside the broker's one-way round trip, per broker.

    uv run --all-packages python bench/request_reply.py                 # all six brokers
    uv run --all-packages python bench/request_reply.py --broker nats --requests 500

For each broker (URL from ``POLYBUS_<KIND>_URL``, else found or started by
``polybus.testing.provision``), in one process and on fresh topics:

- one-way: the round trip of bench/run.py (``PolybusDriver.roundtrip``: send one message, receive
  it, ack it), ``--requests`` times in sequence;
- request-reply: a ``polybus.App`` subscription answers (its return value is the reply) on its own
  broker connection, and a ``polybus_patterns.Requester`` sends ``--requests`` requests in sequence.

It prints p50/p99 in ms of both and the ratio of the p50s (goal: at most 2.5). See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from driver_polybus import PolybusDriver
from measure import percentile
from polybus_patterns import Requester

import polybus

BROKERS = ("memory", "redis", "rabbitmq", "nats", "kafka", "sqs")
DEFAULT_REQUESTS = {"sqs": 50}
WARM_UP = 10


async def one_way(url: str, count: int) -> list[float]:
    driver = PolybusDriver(url)
    suffix = uuid.uuid4().hex[:10]
    await driver.setup(f"bench-rt-{suffix}", f"bench-g-{suffix}")
    body = b"x" * 256
    try:
        latencies = []
        for i in range(WARM_UP + count):
            start = time.perf_counter()
            if not await driver.roundtrip(body, time.monotonic() + 30):
                raise RuntimeError("a round-trip message did not arrive")
            if i >= WARM_UP:
                latencies.append((time.perf_counter() - start) * 1000)
        return latencies
    finally:
        await driver.teardown()


async def serve_by_hand(broker: polybus.Broker, consumer: polybus.Consumer, stop: asyncio.Event) -> None:
    """The responder without the App: receive, reply with the correlation id, ack."""
    async with consumer:
        while not stop.is_set():
            request = await consumer.receive(timeout=1.0)
            if request is None:
                continue
            headers = {polybus.CORRELATION_HEADER: request.headers[polybus.CORRELATION_HEADER]}
            await broker.reply(
                request.headers[polybus.REPLY_TO_HEADER], polybus.Message.of(request.json(), headers=headers)
            )
            await request.ack()


async def request_reply(url: str, count: int, responder: str) -> list[float]:
    topic = f"bench-rr-{uuid.uuid4().hex[:10]}"
    if responder == "loop":
        return await _requests(url, topic, count, None)
    app = polybus.App()

    @app.subscribe(topic, group="responders")
    async def answer(request: dict[str, int]) -> dict[str, int]:
        return request

    return await _requests(url, topic, count, app)


async def _requests(url: str, topic: str, count: int, app: polybus.App | None) -> list[float]:
    stop = asyncio.Event()
    async with polybus.connect(url) as responder_broker, polybus.connect(url) as broker:
        if app is None:
            consumer = responder_broker.topic(topic).consumer("responders")
            await consumer.open()  # the group exists before the first request
            running = asyncio.create_task(serve_by_hand(responder_broker, consumer, stop))
        else:
            consumers = await app.start(responder_broker)
            running = asyncio.create_task(
                app.run(responder_broker, stop=stop, consumers=consumers, grace_period=5)
            )
        try:
            async with Requester(broker) as requester:
                latencies = []
                for i in range(WARM_UP + count):
                    start = time.perf_counter()
                    reply = await requester.request(topic, {"n": i}, timeout=30)
                    if i >= WARM_UP:
                        latencies.append((time.perf_counter() - start) * 1000)
                    assert reply.json() == {"n": i}, reply.body
                return latencies
        finally:
            stop.set()
            await running
            try:
                await broker.topic(topic).delete()
            except polybus.PolybusError:
                pass


def broker_url(kind: str) -> str:
    if kind == "memory":
        return "memory://"
    explicit = os.environ.get(f"POLYBUS_{kind.upper()}_URL")
    if explicit:
        return explicit
    from polybus.testing import provision

    return provision.acquire(kind).url


async def measure(kind: str, count: int, responder: str) -> str:
    url = broker_url(kind)
    one = await one_way(url, count)
    rr = await request_reply(url, count, responder)
    p50_one, p50_rr = statistics.median(one), statistics.median(rr)
    return (
        f"| {kind} | {count} | {p50_one:.2f} | {percentile(one, 99):.2f} | {p50_rr:.2f} | "
        f"{percentile(rr, 99):.2f} | {p50_rr / p50_one:.2f}x |"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description="request-reply vs one-way round trip (docs/benchmarks.md)")
    parser.add_argument("--broker", choices=BROKERS, action="append", help="(repeatable; default: all six)")
    parser.add_argument("--requests", type=int, help="sequential requests per measure (default 200; sqs 50)")
    parser.add_argument(
        "--responder", choices=["app", "loop"], default="app", help="App handler, or a receive/reply loop"
    )
    args = parser.parse_args()
    print(
        "| broker | n | one-way p50 ms | one-way p99 ms | request-reply p50 ms | request-reply p99 ms "
        "| p50 ratio |"
    )
    print("|---|---|---|---|---|---|---|")
    for kind in args.broker or BROKERS:
        count = args.requests or DEFAULT_REQUESTS.get(kind, 200)
        try:
            print(asyncio.run(measure(kind, count, args.responder)), flush=True)
        except Exception as exc:  # one broker's failure is a row of the table, not the end of the run
            print(f"| {kind} | error: {type(exc).__name__}: {str(exc)[:200]} |||||", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
