"""Request-reply on every broker: ``Requester`` against responders (in two processes on real
brokers, in-process on memory://). One body per case; no per-broker branches."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib.util
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from polybus_patterns import RemoteError, Requester

import polybus
from polybus import CORRELATION_HEADER, ERROR_HEADER, ERROR_TYPE_HEADER, REPLY_TO_HEADER, Message
from polybus.testing import unique_name

RESPONDER = Path(__file__).with_name("responder.py")
_spec = importlib.util.spec_from_file_location("polybus_patterns_test_responder", RESPONDER)
assert _spec is not None and _spec.loader is not None
responder = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(responder)

pytestmark = pytest.mark.polybus(timeout=300)


def report(capsys: pytest.CaptureFixture[str], text: str) -> None:
    with capsys.disabled():
        print(f"\n[{text}]", end=" ")


@contextlib.asynccontextmanager
async def responders(url: str, topic: str, group: str, count: int = 2) -> AsyncIterator[None]:
    """``count`` responders in ``group``: processes of their own, or tasks where the broker lives
    in this process (memory://). Returns once every one has joined the group."""
    if url.startswith("memory:"):
        stop = asyncio.Event()
        joined = [asyncio.Event() for _ in range(count)]
        tasks = [asyncio.create_task(responder.serve(url, topic, group, event.set, stop)) for event in joined]
        try:
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in joined)), 60)
            yield
        finally:
            stop.set()
            await asyncio.gather(*tasks)
        return
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            str(RESPONDER),
            url,
            topic,
            group,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        for _ in range(count)
    ]
    try:
        for process in processes:
            assert process.stdout is not None
            line = await asyncio.wait_for(process.stdout.readline(), 120)
            assert line.strip() == b"ready", f"a responder did not start: {line!r}"
        yield
    finally:
        for process in processes:
            assert process.stdin is not None
            process.stdin.close()  # the responder's signal to stop
        for process in processes:
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                process.kill()
                await process.wait()


async def delete_topic(url: str, name: str) -> None:
    async with polybus.connect(url) as broker:
        with contextlib.suppress(polybus.NotFoundError):
            await broker.topic(name).delete()


async def test_every_reply_matches_its_request(
    service_url: str, scaled: Callable[[int], int], capsys: pytest.CaptureFixture[str]
) -> None:
    total, callers = scaled(5000), 20
    topic = unique_name("quotes")
    try:
        async with (
            responders(service_url, topic, "pricing"),
            polybus.connect(service_url) as broker,
            Requester(broker) as requester,
        ):
            latencies: list[float] = []

            async def caller(first: int) -> None:
                for n in range(first, total, callers):
                    started = time.perf_counter()
                    reply = await requester.request(topic, {"n": n}, timeout=30)
                    latencies.append(time.perf_counter() - started)
                    assert reply.json()["n"] == n
                    assert reply.settled

            started = time.perf_counter()
            await asyncio.gather(*(caller(i) for i in range(callers)))
            elapsed = time.perf_counter() - started
            assert len(latencies) == total
            assert requester.pending == 0
            assert requester.stats.replied == total
            assert requester.stats.foreign == 0
        latencies.sort()
        report(
            capsys,
            f"{total} requests, {callers} callers: {elapsed:.2f}s, {total / elapsed:.0f}/s, "
            f"p50 {latencies[len(latencies) // 2] * 1000:.1f} ms, "
            f"p99 {latencies[int(len(latencies) * 0.99)] * 1000:.1f} ms",
        )
    finally:
        await delete_topic(service_url, topic)


async def test_without_a_responder_every_request_times_out_and_leaves_nothing(
    service_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    topic = unique_name("nobody")
    timeout = 1.0
    try:
        async with polybus.connect(service_url) as broker:
            async with broker.topic(topic).consumer("idle"):  # requests are stored; nobody answers
                pass
            async with Requester(broker) as requester:

                async def one(n: int) -> float:
                    started = time.perf_counter()
                    with pytest.raises(polybus.OperationTimeout):
                        await requester.request(topic, {"n": n}, timeout=timeout)
                    return time.perf_counter() - started

                took = await asyncio.gather(*(one(n) for n in range(50)))
                assert max(took) < timeout + 0.5, max(took)
                assert requester.pending == 0
                assert requester.stats.timed_out == 50
            report(capsys, f"50 timeouts of {timeout}s: slowest {max(took):.3f}s")
    finally:
        await delete_topic(service_url, topic)


async def _answer(broker: polybus.Broker, request: polybus.Delivery, body: object, **headers: str) -> None:
    correlation = request.headers[CORRELATION_HEADER]
    await broker.reply(
        request.headers[REPLY_TO_HEADER],
        Message.of(body, headers={CORRELATION_HEADER: correlation, **headers}),
    )


async def test_an_error_reply_raises_remote_error(service_url: str) -> None:
    topic = unique_name("failing")
    try:
        async with (
            polybus.connect(service_url) as broker,
            broker.topic(topic).consumer("g") as consumer,
            Requester(broker) as requester,
        ):
            asked = asyncio.create_task(requester.request(topic, {"n": 1}, timeout=30))
            request = await consumer.receive(timeout=30)
            assert request is not None
            await _answer(
                broker,
                request,
                b"",
                **{ERROR_TYPE_HEADER: "pricing.NoQuote", ERROR_HEADER: "no price for x"},
            )
            await request.ack()
            with pytest.raises(RemoteError) as caught:
                await asked
            assert caught.value.type == "pricing.NoQuote"
            assert caught.value.message == "no price for x"
            assert isinstance(caught.value, polybus.PolybusError)
    finally:
        await delete_topic(service_url, topic)


async def test_late_duplicate_and_foreign_replies_are_dropped_and_counted(service_url: str) -> None:
    topic = unique_name("late")
    try:
        async with (
            polybus.connect(service_url) as broker,
            broker.topic(topic).consumer("g") as consumer,
            Requester(broker) as requester,
        ):
            with pytest.raises(polybus.OperationTimeout):
                await requester.request(topic, {"n": "late"}, timeout=0.5)
            late = await consumer.receive(timeout=30)
            assert late is not None
            await _answer(broker, late, {"n": "late"})  # its request gave up already
            await late.ack()

            asked = asyncio.create_task(requester.request(topic, {"n": "ok"}, timeout=30))
            request = await consumer.receive(timeout=30)
            assert request is not None
            foreign = {**request.headers, CORRELATION_HEADER: "someone-else-1"}
            stray = Message.of({"n": "foreign"}, headers={CORRELATION_HEADER: foreign[CORRELATION_HEADER]})
            await broker.reply(request.headers[REPLY_TO_HEADER], stray)
            await _answer(broker, request, {"n": "ok"})
            await _answer(broker, request, {"n": "ok"})  # a duplicate (the two may arrive in any order)
            await request.ack()
            reply = await asked
            assert reply.json() == {"n": "ok"}
            deadline = time.monotonic() + 30
            while requester.stats.dropped < 3 and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.05)  # polling the requester's counters
            stats = requester.stats
            assert (stats.late, stats.duplicate, stats.foreign) == (1, 1, 1), stats
            assert requester.dropped == 3
    finally:
        await delete_topic(service_url, topic)


async def test_ten_thousand_timed_out_requests_leave_no_growth() -> None:
    """Memory stays flat however many requests time out (memory://: the requester's own state)."""
    import tracemalloc

    topic = unique_name("void")
    async with polybus.connect("memory://") as broker, Requester(broker) as requester:

        async def time_out(n: int) -> None:
            with pytest.raises(polybus.OperationTimeout):
                await requester.request(topic, b"x", timeout=0.001)

        async def wave(count: int) -> None:
            for start in range(0, count, 500):
                await asyncio.gather(*(time_out(n) for n in range(start, min(count, start + 500))))

        tracemalloc.start()
        await wave(5000)  # warm up: caches and the bounded memory of finished ids fill
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        await wave(10_000)
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        assert requester.pending == 0
        assert requester.stats.timed_out == 15_000
        assert after - before < 200_000, f"grew by {after - before} bytes over 10,000 timeouts"
