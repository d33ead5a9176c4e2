"""Bad input at the edges: what a foreign producer may write, names at and past the limits, and
message sizes around the broker's limit.

- ``test_arbitrary_input_from_raw_clients_is_settled``: hypothesis generates bodies (any bytes,
  invalid UTF-8, JSON of the wrong shape, a nesting deeper than any parser's recursion, a pickle
  that would run code, Python source) and headers (empty, huge, invalid UTF-8, forged
  ``polybus-*`` ones: id, attempt, content type, reply address, correlation id, target group...).
  Each broker's own client library writes a batch of them into one topic; an App with a typed
  pydantic handler (a responder: it returns a value) consumes them. Every example the broker took
  is delivered once and settled (handled, or rejected with its reason logged), the worker never
  stops, the decoding API raises nothing but :class:`polybus.PolybusError`, and nothing runs code.
- ``test_names_at_and_past_the_limits``: topic and group names of 200 characters work end to end;
  201 characters, or a character outside the portable set, raise ``ConfigurationError``.
- ``test_message_sizes_at_the_limit``: ``max_message_size - 1`` and ``max_message_size`` are
  confirmed and delivered intact; one byte more raises ``MessageTooLargeError``, and sends nothing.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import string
import tempfile
from pathlib import Path
from typing import Any

import pydantic
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from tests.chaos._raw_writers import writer
from tests.chaos.conftest import Reliability, scale

import polybus
from polybus.testing import Ledger, unique_name

MARK = "x-chaos-n"
"""The header that names an example (never generated as a header of its own)."""
GROUP = "bad-input"
HUGE = 32 * 1024
"""A huge header value: within every broker's frame and message limits, far past any sane header."""
MARKER = Path(tempfile.gettempdir()) / f"polybus-chaos-code-ran-{os.getpid()}"
"""Created by any body that gets run (unpickled, evaluated)."""
RUN_CODE = f"import pathlib; pathlib.Path({str(MARKER)!r}).touch()"


class _RunsCode:
    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (exec, (RUN_CODE,))


PICKLE = pickle.dumps(_RunsCode())
FORGED = [
    "polybus-id", "polybus-attempt", "content-type", "polybus-reply-to", "polybus-correlation-id",
    "polybus-causation-id", "polybus-group", "polybus-resend", "polybus-key", "polybus-ts",
    "polybus-error-type", "polybus-error", "key", "body", "h:body", "Nats-Msg-Id", "Content-Type",
]  # fmt: skip
CONTENT_TYPES = [
    "application/json", "application/python-pickle", "application/x-python-serialize",
    "text/x-python", "text/plain; charset=utf-8", "text/plain; charset=latin-1",
    "application/octet-stream", "application/xml", "", "garbage/\x7f",
]  # fmt: skip
REPLY_TO = [
    "", "polybus-inbox-0123456789abcdef", "polybus-inbox-../../etc", "_INBOX.forged.1",
    "amq.rabbitmq.reply-to.forged", "chaos-victim", "x" * 300,
]  # fmt: skip
BODIES = [
    b"", b"{}", b'{"n": 1}', b'{"n": "one"}', b"[1, 2]", b"null", b'{"n": 1e999}', b'{"n": 1',
    b"[" * 100_000, b'{"n":' * 50_000, b"\xef\xbb\xbf{\"n\": 2}", b"\xff\xfe\x00{", PICKLE,
    RUN_CODE.encode(), f"__import__('os').system('touch {MARKER}')".encode(),
]  # fmt: skip

_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\x00"), max_size=64)
_names = st.one_of(
    st.sampled_from(FORGED),
    st.text(string.ascii_letters + string.digits + "-_.", min_size=1, max_size=40).filter(
        lambda n: n != MARK
    ),
)
_values = st.one_of(
    _text,
    st.binary(max_size=64),
    st.binary(min_size=1, max_size=32).map(lambda b: b"\xc3" + b + b"\xff"),  # invalid UTF-8
    st.sampled_from(CONTENT_TYPES + REPLY_TO + ["", "1", "0", "-1", "99999999999999999999", GROUP]),
    st.just("v" * HUGE),
)
_bodies = st.one_of(
    st.binary(max_size=2048),
    st.binary(min_size=1, max_size=64).map(lambda b: b"\xff" + b),
    st.sampled_from(BODIES),
    st.integers().map(lambda n: f'{{"n": {n}}}'.encode()),
)
EXAMPLES = st.tuples(_bodies, st.dictionaries(_names, _values, max_size=6))
FIXED: list[tuple[bytes, dict[str, str | bytes]]] = [
    (PICKLE, {"content-type": "application/python-pickle"}),
    (PICKLE, {"content-type": "application/x-python-serialize"}),
    (RUN_CODE.encode(), {"content-type": "text/x-python"}),
    (b"[" * 100_000, {"content-type": "application/json"}),
    (b'{"n": 3}', {"polybus-reply-to": "chaos-victim", "polybus-correlation-id": "c-1"}),
    (b'{"n": 4}', {"polybus-reply-to": "polybus-inbox-0123456789abcdef"}),
    (b'{"n": 5}', {"polybus-reply-to": "_INBOX.forged.2"}),
    (b'{"n": 6}', {"polybus-reply-to": "amq.rabbitmq.reply-to.forged"}),
    (b"not json", {"polybus-reply-to": "chaos-victim"}),
    (b'{"n": 7}', {"polybus-group": GROUP}),
    (b'{"n": 8}', {"polybus-group": "another-group"}),
    (b'{"n": 9}', {"polybus-attempt": "-5", "polybus-id": "", "polybus-ts": "yesterday"}),
    (b'{"n": 10}', {"content-type": "v" * HUGE, "polybus-key": "v" * HUGE}),
]


class Order(pydantic.BaseModel):
    n: int


def generate(count: int, *, derandomize: bool) -> list[tuple[bytes, dict[str, str | bytes]]]:
    """``count`` examples from hypothesis (generated up front: the broker gets them in one batch);
    ``derandomize``: the same examples on every run (CI), else new ones each time (full size)."""
    found: list[tuple[bytes, dict[str, str | bytes]]] = []

    @settings(
        max_examples=count,
        deadline=None,
        database=None,
        derandomize=derandomize,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(EXAMPLES)
    def collect(example: tuple[bytes, dict[str, str | bytes]]) -> None:
        found.append(example)

    collect()
    return found


def _problems(delivery: polybus.Delivery) -> list[str]:
    """What is wrong with a delivery's shape, or with how its decoding API fails."""
    problems = []
    if not isinstance(delivery.id, str) or not delivery.id:
        problems.append(f"id {delivery.id!r}")
    if not isinstance(delivery.attempt, int) or delivery.attempt < 1:
        problems.append(f"attempt {delivery.attempt!r}")
    if not isinstance(delivery.body, bytes):
        problems.append(f"body of type {type(delivery.body).__name__}")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in delivery.headers.items()):
        problems.append(f"headers {delivery.headers!r:.200}")
    for decode in (delivery.text, delivery.json, lambda: delivery.decode(Order)):
        try:
            decode()
        except polybus.PolybusError:
            pass
        except Exception as exc:
            problems.append(f"{type(exc).__name__} from decoding (not a PolybusError)")
    return problems


@pytest.mark.polybus(timeout=240)
async def test_arbitrary_input_from_raw_clients_is_settled(
    chaos_broker: str, chaos_url: str, reliability: Reliability
) -> None:
    full = scale() >= 1
    examples = FIXED + generate(200 if full else 25, derandomize=not full)
    MARKER.unlink(missing_ok=True)
    ledger = Ledger()
    problems: dict[str, list[str]] = {}
    settled: dict[str, str] = {}
    topic_name = unique_name("chaos-bad")

    def book(handler: polybus.Handler) -> polybus.Handler:
        async def booked(delivery: polybus.Delivery) -> None:
            n = delivery.headers.get(MARK)
            name = n if n is not None else f"unmarked:{delivery.id}"
            ledger.delivered(name, delivery.attempt)
            wrong = _problems(delivery)
            if wrong:
                problems[name] = wrong
            try:
                await handler(delivery)
            except Exception as exc:
                settled[name] = type(exc).__name__
                raise
            settled[name] = "handled"

        return booked

    app = polybus.App(middlewares=[book])

    @app.subscribe(topic_name, group=GROUP, concurrency=4, retry_delay=0.2)
    async def respond(order: Order) -> dict[str, int]:  # a responder: a request gets this reply
        return {"n": order.n}

    async with polybus.connect(chaos_url) as broker:
        topic = broker.topic(topic_name)
        await topic.ensure()
        stop = asyncio.Event()
        try:
            async with topic.consumer(GROUP, prefetch=1) as joined:  # the group, before the sends
                queue = getattr(joined, "queue", None)  # SQS: the raw client writes to the group's queue
            worker = asyncio.create_task(app.run(broker, stop=stop))
            async with writer(chaos_broker, chaos_url, broker, topic, queue) as write:
                for n, (body, headers) in enumerate(examples):
                    name = str(n)
                    took = await write(body, {**headers, MARK: name})
                    other_group = _text_of(headers.get("polybus-group")) not in (None, GROUP)
                    if took and not other_group:
                        ledger.confirmed(name)
                    else:  # refused by the raw client, or sent to another group: may not arrive
                        ledger.failed(name)
            complete = await ledger.wait_complete(60)
            await asyncio.sleep(1.5)  # a redelivery loop (a nack every retry_delay) would show here
            crashed = worker.done()
            stop.set()
            await asyncio.wait_for(worker, 30)
        finally:
            stop.set()
            await topic.delete()
    report = ledger.report()
    reliability(report, examples=len(examples))
    assert not MARKER.exists(), "a body ran code"
    assert not crashed, f"the App stopped: {worker.exception()!r}"
    missing = {n: _shown(examples[int(n)]) for n in sorted(report.lost, key=int)[:5]}
    assert complete, f"not every example was delivered within 60 s: {report.summary()}; e.g. {missing}"
    assert not problems, problems
    report.check(max_duplicates=0)


def _shown(example: tuple[bytes, dict[str, str | bytes]]) -> str:
    body, headers = example
    return f"body {body[:40]!r} ({len(body)} bytes), headers { ({k: v[:40] for k, v in headers.items()})!r}"


def _text_of(value: str | bytes | None) -> str | None:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


NAME_LIMIT = 200


@pytest.mark.polybus(timeout=120)
async def test_names_at_and_past_the_limits(
    chaos_broker: str, chaos_url: str, reliability: Reliability
) -> None:
    ledger = Ledger()
    stem = unique_name("n")
    longest = (stem + "x" * NAME_LIMIT)[:NAME_LIMIT]
    async with polybus.connect(chaos_url) as broker:
        for bad in ("x" * (NAME_LIMIT + 1), "", "-x", "a.b", "a b", "ä", "a/b", "a*", "a>"):
            with pytest.raises(polybus.ConfigurationError):
                broker.topic(bad)
            with pytest.raises(polybus.ConfigurationError):
                broker.topic(longest).consumer(bad)
        topic = broker.topic(longest)
        try:
            async with topic.consumer("g" * NAME_LIMIT) as consumer:
                async with topic.producer() as producer:
                    assert await ledger.send(producer, [polybus.Message(b"at the limit")])
                delivery = await consumer.receive(timeout=30)
                assert delivery is not None, "nothing arrived on a topic and group named at the limit"
                ledger.record(delivery)
                await delivery.ack()
        finally:
            await topic.delete()
    report = ledger.report()
    reliability(report)
    report.check(max_duplicates=0)


WIRE_COUNTED = {"sqs": "SNS counts the id attribute polybus adds (and base64 of a binary body): docs/sqs.md"}
"""Brokers whose limit counts what the adapter adds on the wire: at the limit a message may be refused."""


@pytest.mark.polybus(timeout=120)
async def test_message_sizes_at_the_limit(
    chaos_broker: str, chaos_url: str, reliability: Reliability
) -> None:
    ledger = Ledger()
    refused: list[int] = []
    async with polybus.connect(chaos_url) as broker:
        limit = broker.capabilities.max_message_size
        if limit is None:
            pytest.skip(f"{chaos_broker} declares no max_message_size")
        topic = broker.topic(unique_name("chaos-size"))
        try:
            async with topic.consumer("sizes") as consumer, topic.producer() as producer:
                sized = {}
                for size in (limit - 1, limit, limit + 1):
                    message = polybus.Message(b"", {"content-type": "text/plain; charset=utf-8"})
                    message.body = b"s" * (size - message.size)
                    assert message.size == size
                    try:
                        ids = await producer.send_many([message])
                    except polybus.MessageTooLargeError:
                        refused.append(size)
                        continue
                    ledger.confirmed(ids)
                    sized[message.id] = message.body
                got = {}
                while len(got) < len(sized):
                    delivery = await consumer.receive(timeout=30)
                    assert delivery is not None, f"only {len(got)} of the {len(sized)} messages arrived"
                    ledger.record(delivery)
                    got[delivery.id] = delivery.body
                    await delivery.ack()
                assert await consumer.receive(timeout=1) is None, (
                    "a message arrived twice, or one past the limit"
                )
        finally:
            await topic.delete()
    report = ledger.report()
    reliability(report, limit=limit, refused=refused)
    assert limit + 1 in refused, f"a message of {limit + 1} bytes was sent past the limit of {limit}"
    if chaos_broker not in WIRE_COUNTED:
        assert refused == [limit + 1], f"messages within the limit of {limit} were refused: {refused}"
    assert all(body == sized[i] for i, body in got.items()), "a body arrived changed"
    report.check(max_duplicates=0)
