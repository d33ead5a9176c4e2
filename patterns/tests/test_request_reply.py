"""Request-reply on every broker: ``Requester`` against the responder App of responder.py (in two
processes on real brokers, in-process on memory://), and against replies sent by hand where a case
needs a late, duplicate or foreign one. One body per case; no per-broker branches."""

from __future__ import annotations

import asyncio
import collections
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
from polybus.testing.plugin import note

RESPONDER = Path(__file__).with_name("responder.py")
_spec = importlib.util.spec_from_file_location("polybus_patterns_test_responder", RESPONDER)
assert _spec is not None and _spec.loader is not None
responder = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(responder)
Quote, QuoteRequest, NoQuote = responder.Quote, responder.QuoteRequest, responder.NoQuote
UNOBTAINABLE = responder.UNOBTAINABLE

pytestmark = pytest.mark.polybus(timeout=300)


def report(request: pytest.FixtureRequest, text: str) -> None:
    note(request.node, text)


@contextlib.asynccontextmanager
async def app_responder(url: str, topic: str, concurrency: int = 1) -> AsyncIterator[None]:
    """The responder App (responder.py) run in this process on a connection of its own, ``quotes``
    mapped to ``topic``; returns once its group is joined."""
    stop = asyncio.Event()
    async with polybus.connect(url) as broker:
        consumers = await responder.app.start(
            broker, topics={"quotes": topic}, overrides={"quote": {"concurrency": concurrency}}
        )
        running = asyncio.create_task(
            responder.app.run(broker, stop=stop, consumers=consumers, grace_period=10)
        )
        try:
            yield
        finally:
            stop.set()
            await running


@contextlib.asynccontextmanager
async def responders(url: str, topic: str, count: int = 2, concurrency: int = 8) -> AsyncIterator[None]:
    """``count`` responder Apps: processes of their own (``python responder.py``), or in this process
    where the broker lives in it (memory://). Returns once every one has joined the group."""
    if url.startswith("memory:"):
        async with contextlib.AsyncExitStack() as stack:
            for _ in range(count):
                await stack.enter_async_context(app_responder(url, topic, concurrency))
            yield
        return
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            str(RESPONDER),
            url,
            topic,
            str(concurrency),
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
    service_url: str, scaled: Callable[[int], int], request: pytest.FixtureRequest
) -> None:
    """5,000 requests from 20 concurrent callers, answered by the responder App in two processes."""
    total, callers = scaled(5000), 20
    topic = unique_name("quotes")
    try:
        async with (
            responders(service_url, topic),
            polybus.connect(service_url) as broker,
            Requester(broker) as requester,
        ):
            latencies: list[float] = []
            by: collections.Counter[int] = collections.Counter()

            async def caller(first: int) -> None:
                for n in range(first, total, callers):
                    started = time.perf_counter()
                    reply = await requester.request(
                        topic, QuoteRequest(item=f"item-{n}", quantity=n), timeout=30
                    )
                    latencies.append(time.perf_counter() - started)
                    assert reply.settled
                    quote = reply.decode(Quote)
                    assert (quote.item, quote.quantity, quote.total) == (f"item-{n}", n, n * 2.5)
                    by[quote.by] += 1

            started = time.perf_counter()
            await asyncio.gather(*(caller(i) for i in range(callers)))
            elapsed = time.perf_counter() - started
            assert len(latencies) == total
            assert requester.pending == 0
            assert requester.stats.replied == total
            assert requester.stats.dropped == 0, requester.stats
        latencies.sort()
        report(
            request,
            f"{total} requests, {callers} callers: {elapsed:.2f}s, {total / elapsed:.0f}/s, "
            f"p50 {latencies[len(latencies) // 2] * 1000:.1f} ms, "
            f"p99 {latencies[int(len(latencies) * 0.99)] * 1000:.1f} ms, "
            f"answered per process {sorted(by.values(), reverse=True)}",
        )
    finally:
        await delete_topic(service_url, topic)


async def test_an_app_handler_answers_and_its_failures_become_remote_errors(service_url: str) -> None:
    """The pinned shape: ``@app.subscribe("quotes", group="pricing") async def quote(req:
    QuoteRequest) -> Quote`` answers ``requester.request(...)``; a handler that raises and a body
    that does not decode come back as :class:`RemoteError`; the responder keeps answering."""
    topic = unique_name("quotes")
    try:
        async with (
            app_responder(service_url, topic),
            polybus.connect(service_url) as broker,
            Requester(broker) as requester,
        ):
            reply = await requester.request(topic, QuoteRequest(item="tea", quantity=4), timeout=30)
            quote = reply.decode(Quote)
            assert (quote.item, quote.quantity, quote.total) == ("tea", 4, 10.0)
            assert reply.headers[CORRELATION_HEADER]

            with pytest.raises(RemoteError) as raised:
                await requester.request(topic, QuoteRequest(item=UNOBTAINABLE, quantity=1), timeout=30)
            assert raised.value.type == f"{NoQuote.__module__}.NoQuote"
            assert raised.value.message == f"no price for {UNOBTAINABLE}"
            assert isinstance(raised.value, polybus.PolybusError)
            error = raised.value.reply
            assert error is not None and error.body == b""
            assert error.headers[ERROR_TYPE_HEADER] == raised.value.type
            assert error.headers[ERROR_HEADER] == raised.value.message

            with pytest.raises(RemoteError) as undecodable:
                await requester.request(topic, {"item": "tea"}, timeout=30)  # no quantity
            assert undecodable.value.type == "polybus.DecodeError"
            assert "QuoteRequest" in undecodable.value.message
            assert "quantity" in undecodable.value.message

            reply = await requester.request(topic, QuoteRequest(item="milk", quantity=2), timeout=30)
            assert reply.decode(Quote).total == 5.0  # still answering after both failures
            assert requester.stats.replied == 4
            assert requester.stats.dropped == 0, requester.stats
    finally:
        await delete_topic(service_url, topic)


async def test_without_a_responder_every_request_times_out_and_leaves_nothing(
    service_url: str, request: pytest.FixtureRequest
) -> None:
    topic = unique_name("nobody")
    timeout = 1.0
    try:
        async with polybus.connect(service_url) as broker:
            await broker.topic(topic).ensure()  # requests are stored; nobody answers
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
            report(request, f"50 timeouts of {timeout}s: slowest {max(took):.3f}s")
    finally:
        await delete_topic(service_url, topic)


async def _answer(broker: polybus.Broker, request: polybus.Delivery, body: object, **headers: str) -> None:
    correlation = request.headers[CORRELATION_HEADER]
    await broker.reply(
        request.headers[REPLY_TO_HEADER],
        Message.of(body, headers={CORRELATION_HEADER: correlation, **headers}),
    )


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
        # warm up: caches fill, and so does the bounded memory of finished ids (4,096), past the resize
        # of its table that churn brings (~5,500 ids in): a step of ~165 KB, once, that is no growth
        await wave(8000)
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        await wave(10_000)
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        assert requester.pending == 0
        assert requester.stats.timed_out == 18_000
        assert after - before < 100_000, f"grew by {after - before} bytes over 10,000 timeouts"
