"""Retry with backoff and dead letters per group, on every broker: one body per case.

The only per-broker value is :data:`GRANULARITY`, how late a ``nack(delay)`` may come back on each
broker (documented in docs/failure-handling.md); volumes are scaled down on SQS (moto).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import time
from collections.abc import Callable, Iterator

import pydantic
import pytest
from polybus_patterns import DeadLetters, RetryPolicy, dead_letter_topic, retry

import polybus
from polybus.adapter import check_name
from polybus.testing import unique_name

GRANULARITY = {"memory": 0.1, "redis": 1.0, "rabbitmq": 0.5, "kafka": 1.5, "nats": 0.5, "sqs": 2.5}
"""Seconds a retry may come later than its delay on each broker (see docs/failure-handling.md)."""


class Order(pydantic.BaseModel):
    id: int
    total: float


class Boom(Exception):
    """The handler's failure in these tests."""


async def _until(condition: Callable[[], bool], timeout: float, what: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not done within {timeout}s: {what()}")
        await asyncio.sleep(0.05)


async def _count_until(dead: DeadLetters, n: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while True:
        count = await dead.count()
        if count >= n or time.monotonic() > deadline:
            return count
        await asyncio.sleep(0.2)


async def _run_app(app: polybus.App, broker: polybus.Broker) -> tuple[asyncio.Event, asyncio.Task[None]]:
    consumers = await app.start(broker)  # every group exists before the first publish
    stop = asyncio.Event()
    return stop, asyncio.create_task(app.run(broker, stop=stop, consumers=consumers, grace_period=10))


async def _stop(stop: asyncio.Event, task: asyncio.Task[None]) -> None:
    stop.set()
    await asyncio.wait_for(task, 30)


@pytest.fixture
def scratch(service_url: str) -> Iterator[list[str]]:
    """Topics a case made: deleted after it, with their groups' dead-letter topics (shared brokers)."""
    names: list[str] = []
    yield names

    async def drop() -> None:
        async with polybus.connect(service_url) as broker:
            for name in names:
                await drop_topics(broker, name)

    asyncio.run(asyncio.wait_for(drop(), 60))


async def drop_topics(broker: polybus.Broker, topic: str) -> None:
    """Delete ``topic`` and the dead-letter topic of each of its groups; what is gone already is fine."""
    try:
        groups = list((await broker.topic(topic).stats()).groups)
    except polybus.PolybusError:
        groups = []
    for name in [*(dead_letter_topic(topic, g) for g in groups), topic]:
        with contextlib.suppress(polybus.PolybusError):
            await broker.topic(name).delete()


def test_policy_delays_grow_cap_and_spread() -> None:
    policy = RetryPolicy(max_attempts=4, first_delay=0.2, multiplier=2.0, max_delay=30.0, jitter=0.1)
    for attempt, base in [(1, 0.2), (2, 0.4), (3, 0.8), (10, 30.0)]:
        delays = [policy.delay(attempt) for _ in range(200)]
        assert all(base * 0.9 - 1e-9 <= d <= min(30.0, base * 1.1) + 1e-9 for d in delays), (attempt, delays)
        assert len(set(delays)) > 1  # spread, not one value
    assert RetryPolicy(jitter=0, first_delay=1, multiplier=3, max_delay=5).delay(3) == 5
    assert RetryPolicy(jitter=0).delay(5000) == 300.0
    assert RetryPolicy(give_up_on=KeyError).give_up_on == (KeyError,)
    assert not RetryPolicy(give_up_on=(KeyError,)).retryable(KeyError("x"))
    assert not RetryPolicy().retryable(polybus.DecodeError("bad"))
    assert RetryPolicy().retryable(Boom())
    for bad in ({"max_attempts": 0}, {"first_delay": -1}, {"multiplier": 0.5}, {"jitter": 2}):
        with pytest.raises(polybus.ConfigurationError):
            RetryPolicy(**bad)  # type: ignore[arg-type]
    with pytest.raises(polybus.ConfigurationError):
        RetryPolicy(give_up_on=("KeyError",))  # type: ignore[arg-type]


def test_dead_letter_topic_names_are_portable_and_distinct() -> None:
    assert dead_letter_topic("orders", "billing") == "orders--billing--dlq"
    a, b = dead_letter_topic("a--b", "c"), dead_letter_topic("a", "b--c")
    assert a != b
    long = dead_letter_topic("t" * 200, "g" * 200)
    for name in (a, b, long):
        assert check_name(name, "topic") == name  # portable on every broker


async def test_fails_k_times_then_succeeds_with_the_policy_gaps(
    service_url: str, service_broker: str, scratch: list[str]
) -> None:
    k = 2
    policy = RetryPolicy(max_attempts=4, first_delay=0.5, multiplier=2.0, max_delay=30.0, jitter=0.0)
    topic = unique_name("retry-k")
    scratch.append(topic)
    runs: list[float] = []
    processed: list[str] = []
    app = polybus.App(middlewares=[retry(policy)])

    @app.subscribe(topic, group="billing")
    async def bill(order: Order, delivery: polybus.Delivery) -> None:
        runs.append(time.monotonic())
        if len(runs) <= k:
            raise Boom(f"failure {len(runs)}")
        processed.append(delivery.id)

    async with polybus.connect(service_url) as broker:
        stop, task = await _run_app(app, broker)
        try:
            async with broker.topic(topic).producer() as producer:
                sent = await producer.send(Order(id=1, total=9.5))
            await _until(lambda: len(processed) == 1, 30, lambda: f"{len(runs)} runs")
            await asyncio.sleep(1.0)  # nothing more comes
        finally:
            await _stop(stop, task)
        assert processed == [sent] and len(runs) == k + 1
        gaps = [b - a for a, b in itertools.pairwise(runs)]
        for attempt, gap in enumerate(gaps, start=1):
            expected = policy.delay(attempt)
            assert expected - 0.05 <= gap <= expected + GRANULARITY[service_broker], (attempt, gaps)
        print(f"[{service_broker}: gaps {[round(g, 3) for g in gaps]}]", end=" ")
        assert await DeadLetters(broker, topic, "billing").count() == 0


async def test_one_poison_message_reaches_the_dlq_after_max_attempts_and_holds_nothing_up(
    service_url: str, scaled: Callable[[int], int], scratch: list[str]
) -> None:
    # scaled twice where volumes are scaled (SQS on moto consumes ~40 messages/s): 100 there
    n = scaled(scaled(10_000))
    policy = RetryPolicy(max_attempts=3, first_delay=2.0, multiplier=1.0, max_delay=2.0, jitter=0.0)
    topic = unique_name("poison")
    scratch.append(topic)
    poison_runs: list[float] = []
    done: dict[int, float] = {}
    cured: list[int] = []  # the poison's attempt once it is replayed and handled
    app = polybus.App(middlewares=[retry(policy)])

    @app.subscribe(topic, group="billing", concurrency=8)
    async def bill(order: Order, delivery: polybus.Delivery) -> None:
        if order.id == 0:
            if len(poison_runs) == policy.max_attempts:  # replayed: it works now
                cured.append(delivery.attempt)
                return
            poison_runs.append(time.monotonic())
            raise Boom("card declined")
        done[order.id] = time.monotonic()

    async with polybus.connect(service_url) as broker:
        stop, task = await _run_app(app, broker)
        try:
            async with broker.topic(topic).producer() as producer:
                poison_id = (await producer.send_many([Order(id=0, total=1.0)]))[0]
                for start in range(1, n, 1000):
                    await producer.send_many(
                        [Order(id=i, total=1.0) for i in range(start, min(n, start + 1000))]
                    )
            dead = DeadLetters(broker, topic, "billing")
            await _until(
                lambda: len(done) == n - 1 and len(poison_runs) == 3, 120, lambda: f"{len(done)} done"
            )
            assert await _count_until(dead, 1, 30) == 1
            await asyncio.sleep(1.0)
            assert len(poison_runs) == policy.max_attempts  # exactly, and never again
            assert set(done) == set(range(1, n))
            # not held up: the message sent right after the poison was done before its first retry
            assert done[1] < poison_runs[1]
            [letter] = await dead.peek(limit=10)
            assert letter.id == poison_id and Order.model_validate_json(letter.body).id == 0
            assert letter.attempts == 3 and letter.error_type == f"{Boom.__module__}.Boom"
            assert letter.error == "card declined" and "Boom: card declined" in (letter.traceback or "")
            assert letter.topic == topic and letter.group == "billing" and letter.failed_at is not None
            for name in ("topic", "group", "attempts", "error-type", "error", "traceback", "at"):
                assert f"polybus-dlq-{name}" in letter.headers
            assert letter.headers["content-type"] == "application/json"  # the original headers kept
            assert await dead.count() == 1  # peek consumed nothing
            # replayed, it counts its attempts from 1 again
            assert await dead.replay(ids=[poison_id]) == 1
            await _until(lambda: cured == [1], 60, lambda: f"cured={cured}")
            assert await dead.count() == 0
        finally:
            await _stop(stop, task)


async def test_malformed_payloads_are_dead_lettered_at_once_with_the_reason(
    service_url: str, scratch: list[str]
) -> None:
    policy = RetryPolicy(max_attempts=5, first_delay=0.2, jitter=0.0)
    topic = unique_name("malformed")
    scratch.append(topic)
    good: list[int] = []
    app = polybus.App(middlewares=[retry(policy)])

    @app.subscribe(topic, group="billing")
    async def bill(order: Order) -> None:
        good.append(order.id)

    async with polybus.connect(service_url) as broker:
        stop, task = await _run_app(app, broker)
        try:
            async with broker.topic(topic).producer() as producer:
                bad_json = await producer.send(b"{not json", key="k1")
                wrong = await producer.send({"id": "one", "total": None})
                await producer.send(Order(id=7, total=1.0))
            dead = DeadLetters(broker, topic, "billing")
            await _until(lambda: good == [7], 30, lambda: f"good={good}")
            assert await _count_until(dead, 2, 30) == 2
        finally:
            await _stop(stop, task)
        letters = {letter.id: letter for letter in await dead.peek()}
        assert set(letters) == {bad_json, wrong}
        for letter in letters.values():
            assert letter.attempts == 1 and letter.error_type == "polybus.DecodeError"
            assert "does not decode as Order" in (letter.error or "")
        assert letters[bad_json].body == b"{not json" and letters[bad_json].key == "k1"
        assert await dead.purge() == 2  # leave nothing behind on a shared broker


async def test_replay_sends_back_to_the_failing_group_only_and_purge_removes_what_it_says(
    service_url: str, scaled: Callable[[int], int], scratch: list[str]
) -> None:
    n = scaled(1000)
    topic = unique_name("replay")
    scratch.append(topic)
    failing = True
    billing: collections.Counter[str] = collections.Counter()
    email: collections.Counter[str] = collections.Counter()
    app = polybus.App(middlewares=[retry(RetryPolicy(max_attempts=1, give_up_on=(KeyError,)))])

    @app.subscribe(topic, group="billing", concurrency=8)
    async def bill(order: Order, delivery: polybus.Delivery) -> None:
        if failing:
            raise (KeyError if order.id % 4 == 0 else Boom)(f"order {order.id}")
        billing[delivery.id] += 1

    @app.subscribe(topic, group="email", concurrency=8)
    async def mail(order: Order, delivery: polybus.Delivery) -> None:
        email[delivery.id] += 1

    async with polybus.connect(service_url) as broker:
        stop, task = await _run_app(app, broker)
        dead = DeadLetters(broker, topic, "billing")
        try:
            ids: list[str] = []
            async with broker.topic(topic).producer() as producer:
                for start in range(0, n, 500):
                    ids += await producer.send_many(
                        [Order(id=i, total=1.0) for i in range(start, min(n, start + 500))]
                    )
            await _until(lambda: len(email) == n, 120, lambda: f"{len(email)} mailed")
            assert await _count_until(dead, n, 60) == n
            failing = False
            assert await dead.replay() == n
            await _until(lambda: len(billing) == n, 120, lambda: f"{len(billing)} billed")
            await asyncio.sleep(1.5)  # nothing more comes, to either group
            assert set(billing) == set(ids) and set(billing.values()) == {1}
            assert set(email) == set(ids) and set(email.values()) == {1}
            assert await dead.count() == 0
            # purge: 10 more dead letters, 3 of them KeyErrors (ids 0, 4, 8)
            failing = True
            async with broker.topic(topic).producer() as producer:
                more = await producer.send_many([Order(id=i, total=1.0) for i in range(10)])
            assert await _count_until(dead, 10, 60) == 10
            assert await dead.purge(ids=more[1:3]) == 2
            assert await dead.purge(error_type="KeyError") == 3
            assert await dead.count() == 5
            failing = False
            assert await dead.replay(limit=2) == 2
            assert await dead.purge() == 3
            assert await dead.count() == 0
        finally:
            await _stop(stop, task)


async def test_a_request_given_up_on_is_dead_lettered_then_answered_with_an_error(
    service_url: str, scratch: list[str]
) -> None:
    policy = RetryPolicy(max_attempts=2, first_delay=0.2, jitter=0.0)
    topic = unique_name("quotes")
    scratch.append(topic)
    runs: list[int] = []
    app = polybus.App(middlewares=[retry(policy)])

    @app.subscribe(topic, group="pricing")
    async def quote(order: Order, delivery: polybus.Delivery) -> Order:
        runs.append(delivery.attempt)
        raise Boom("no price")

    async with polybus.connect(service_url) as broker:
        stop, task = await _run_app(app, broker)
        try:
            async with broker.inbox() as inbox:
                message = polybus.Message.of(
                    Order(id=3, total=1.0), headers={polybus.CORRELATION_HEADER: "c-1"}
                )
                sent = await inbox.request(topic, message)
                reply = await inbox.receive(timeout=30)
            assert reply is not None, "no error reply"
            assert reply.headers[polybus.ERROR_TYPE_HEADER].endswith("Boom")
            assert reply.headers[polybus.ERROR_HEADER] == "no price"
            assert reply.headers.get(polybus.CORRELATION_HEADER) == "c-1"
            assert runs == [1, 2]  # retried first; one reply, after the policy gave up
            dead = DeadLetters(broker, topic, "pricing")
            [letter] = await dead.peek()
            assert letter.id == sent and letter.attempts == 2
            assert await dead.purge() == 1
        finally:
            await _stop(stop, task)
