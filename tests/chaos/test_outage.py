"""Publishing while the broker is down: every send is confirmed (and later delivered) or raises a
typed :class:`polybus.PolybusError` within its timeout; no send hangs."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable

import pytest
from tests.chaos.conftest import Reliability, scale
from tests.chaos.test_restart import enter_or_skip

import polybus
from polybus.testing import (
    BrokerProcess,
    FaultInjector,
    Ledger,
    RelayFaults,
    run_stream,
    unique_name,
)

PRODUCERS = 4
FIRST_FAULT_AFTER = 2.0
"""Seconds of sending before the outage (the broker's queues settled)."""
SLACK = 15.0
"""Seconds a send may take beyond its reconnect policy's ``give_up_after`` plus one request's
timeout (a loaded CI machine): more than that counts as a hang."""


def _options(broker: str, timeout: float) -> str:
    """URL options bounding one request of ``broker`` by ``timeout`` seconds."""
    ms = int(timeout * 1000)
    return {
        "kafka": f"request_timeout_ms={ms}",
        "rabbitmq": f"operation_timeout={timeout}&connect_timeout={timeout}",
        "redis": f"socket_timeout={timeout}&connect_timeout={timeout}",
        "nats": f"publish_timeout={timeout}&connect_timeout={timeout}",
        "sqs": f"read_timeout={timeout}&connect_timeout={timeout}&visibility_timeout=5",
    }[broker]


@contextlib.asynccontextmanager
async def _outage_injector(
    chaos_broker: str, options: str, request: pytest.FixtureRequest
) -> AsyncIterator[FaultInjector]:
    """The broker process itself where it can be killed and restarted, else a relay in front of it."""
    if BrokerProcess.unsupported(chaos_broker) is None:
        async with contextlib.AsyncExitStack() as stack:
            process = BrokerProcess(chaos_broker, options=options)
            await enter_or_skip(stack, process)
            yield process
        return
    url: str = request.getfixturevalue("chaos_url")
    relay = RelayFaults.in_front_of(f"{url}{'&' if '?' in url else '?'}{options}")
    assert relay is not None, "the broker URL names no host and port"
    async with relay:
        yield relay


@pytest.mark.polybus(timeout=600)
async def test_publishing_while_broker_down_ten_seconds(
    chaos_broker: str, request: pytest.FixtureRequest, size: Callable[..., int], reliability: Reliability
) -> None:
    if chaos_broker == "memory":
        pytest.skip("memory:// has no broker to take down")
    down = max(3.0, 10 * scale())
    # a send gives up (reconnect policy, one request's timeout) well within the outage, so that
    # sends raise in it and sends around it are confirmed
    give_up = timeout = max(1.5, down / 2)
    bound = give_up + timeout + SLACK
    messages = size(2_000, least=200)  # the stream run_stream sends besides, retried until confirmed
    took: list[float] = []
    outcomes = {"confirmed": 0, "raised": 0, "confirmed_after": 0}
    ready: set[int] = set()
    sending, back, confirmed_after = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async with _outage_injector(chaos_broker, _options(chaos_broker, timeout), request) as faults:
        url = faults.url + f"&reconnect_give_up_after={give_up}&reconnect_maximum={give_up / 4}"

        async def send_through(ledger: Ledger, stop: asyncio.Event, me: int) -> None:
            size = 1 if me % 2 else 10  # half the producers send single messages, half batches
            async with polybus.connect(url) as broker, broker.topic(topic).producer() as producer:
                while not stop.is_set():
                    batch = [polybus.Message(body=f"outage {me}".encode()) for _ in range(size)]
                    after = back.is_set()
                    started = time.monotonic()
                    try:
                        async with asyncio.timeout(bound):  # a send that outlives it hangs: fail
                            confirmed = await ledger.send(producer, batch)
                    except TimeoutError:
                        pytest.fail(f"a send of {size} hung for over {bound:.0f}s in the outage")
                    took.append(time.monotonic() - started)
                    outcomes["confirmed" if confirmed else "raised"] += 1
                    if confirmed and after:
                        outcomes["confirmed_after"] += 1
                        confirmed_after.set()
                    ready.add(me)
                    if len(ready) == PRODUCERS:
                        sending.set()
                    await asyncio.sleep(0.05)

        async def outage(ledger: Ledger) -> None:
            stop = asyncio.Event()
            async with asyncio.TaskGroup() as tasks:
                for me in range(PRODUCERS):
                    tasks.create_task(send_through(ledger, stop, me))
                async with asyncio.timeout(60):
                    await sending.wait()  # every producer connected and sending
                # RabbitMQ 3.10 may leave a quorum queue without a leader when killed within about
                # a second of declaring it (docs/rabbitmq.md): the queues settle first
                await asyncio.sleep(FIRST_FAULT_AFTER)
                ledger.fault("down")
                await faults.stop()
                await asyncio.sleep(down)
                await faults.start()
                back.set()
                async with asyncio.timeout(60):
                    await confirmed_after.wait()  # sends are confirmed again after the outage
                await asyncio.sleep(0.5)
                stop.set()

        topic = unique_name("chaos-outage")
        report = await run_stream(url, topic, messages=messages, fault=outage, send_interval=0.1)
    longest = max(took)
    reliability(report, down_seconds=down, max_send_seconds=round(longest, 1), **outcomes)
    assert outcomes["raised"] > 0, f"no send raised in a {down:.0f}s outage: {outcomes}"
    assert outcomes["confirmed_after"] > 0, outcomes
    assert longest <= bound, f"a send took {longest:.1f}s, over {bound:.0f}s"
    report.check()
