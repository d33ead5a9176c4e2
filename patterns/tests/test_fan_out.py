"""Fan-out helpers on memory:// and the five real brokers: declare before traffic, recipient lists.

Each case fails without the helper it tests: a group created after a send never gets that send,
so the messages here are sent *before* any consumer of the groups is opened.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable

import pytest
from polybus_patterns import RecipientList, RecipientListError, declare, send_to_all

import polybus
from polybus.testing import unique_name

RECEIVE = 15.0
"""Seconds a case waits for each message at most (a generous bound, not a timing assertion)."""


async def drain(consumer: polybus.Consumer, count: int) -> list[polybus.Delivery]:
    """``count`` deliveries, acked, then a short look for more (a duplicate would show up here)."""
    got: list[polybus.Delivery] = []
    async with consumer:
        while len(got) < count:
            delivery = await consumer.receive(timeout=RECEIVE)
            assert delivery is not None, f"{consumer!r}: {len(got)} of {count} arrived"
            await delivery.ack()
            got.append(delivery)
        extra = await consumer.receive(timeout=0.3)
        assert extra is None, f"{consumer!r}: a message came twice: {extra!r}"
    return got


async def drain_all(consumers: list[polybus.Consumer], count: int) -> list[list[polybus.Delivery]]:
    """:func:`drain` each consumer, all at once (joining a group takes seconds on some brokers)."""
    return list(await asyncio.gather(*(drain(consumer, count) for consumer in consumers)))


async def test_groups_declared_from_a_mapping_each_get_every_message_sent_after(
    service_url: str, scaled: Callable[[int], int]
) -> None:
    n = scaled(100)
    topic, groups = unique_name("orders"), ["billing", "mailer", "audit"]
    async with polybus.connect(service_url) as broker:
        await declare(broker, {"orders": groups}, topics={"orders": topic})  # logical -> physical
        async with broker.topic(topic).producer() as producer:  # before any member listens
            await producer.send_many([{"order": i} for i in range(n)])
        received = await drain_all([broker.topic(topic).consumer(group) for group in groups], n)
        for group, got in zip(groups, received, strict=True):
            assert sorted(d.json()["order"] for d in got) == list(range(n)), group


async def test_an_apps_groups_are_declared_before_it_runs(
    service_url: str, scaled: Callable[[int], int]
) -> None:
    n = scaled(50)
    topic = unique_name("signups")
    app = polybus.App()
    # two groups, not three: App.start joins one group after the other (3 s each on Kafka)
    seen: dict[str, collections.Counter[int]] = {g: collections.Counter() for g in ("welcome", "crm")}
    done = asyncio.Event()

    def handler_for(group: str) -> polybus.Handler:
        async def handle(delivery: polybus.Delivery) -> None:
            seen[group][delivery.json()["user"]] += 1
            if all(len(counts) == n for counts in seen.values()):
                done.set()

        handle.__name__ = f"count_{group}"  # a subscription's name, unique in the App
        return handle

    for group in seen:
        app.subscribe(topic, group=group)(handler_for(group))
    async with polybus.connect(service_url) as broker:
        await declare(broker, app)
        async with broker.topic(topic).producer() as producer:  # the service is not running yet
            await producer.send_many([{"user": i} for i in range(n)])
        stop = asyncio.Event()
        service = asyncio.create_task(app.run(broker, stop=stop))
        try:
            await asyncio.wait_for(done.wait(), RECEIVE + n / 10)
        finally:
            stop.set()
            await service
    for group, counts in seen.items():
        assert sorted(counts) == list(range(n)), group
        assert set(counts.values()) == {1}, f"{group}: some message came twice"


async def test_a_recipient_list_reaches_every_topic_with_one_id(
    service_url: str, scaled: Callable[[int], int]
) -> None:
    m = scaled(20)
    topics = [unique_name(t) for t in ("billing", "shipping", "audit")]
    async with polybus.connect(service_url) as broker:
        await declare(broker, {t: ["reader"] for t in topics})
        sent: list[dict[str, str]] = []
        async with RecipientList(broker, topics) as recipients:
            for i in range(m):
                ids = await recipients.send({"order": i}, key=f"customer-{i % 3}", headers={"source": "test"})
                assert list(ids) == topics and len(set(ids.values())) == 1, ids
                sent.append(ids)
        received = await drain_all([broker.topic(topic).consumer("reader") for topic in topics], m)
        for topic, got in zip(topics, received, strict=True):
            by_order = {d.json()["order"]: d for d in got}
            assert sorted(by_order) == list(range(m)), topic
            for i, delivery in by_order.items():
                assert delivery.id == sent[i][topic]
                assert delivery.key == f"customer-{i % 3}" and delivery.headers["source"] == "test"


async def test_a_topic_that_fails_is_named_and_the_others_stay_sent(service_url: str) -> None:
    topics = [unique_name(t) for t in ("a", "b", "c")]
    async with polybus.connect(service_url) as broker:
        await declare(broker, {t: ["reader"] for t in topics})
        async with RecipientList(broker, topics) as recipients:
            await recipients.producers[topics[2]].aclose()  # one recipient's producer is gone
            with pytest.raises(RecipientListError) as caught:
                await recipients.send(b"one")
            error = caught.value
            assert isinstance(error, polybus.PublishError)
            assert set(error.failed) == {topics[2]}
            assert isinstance(error.failed[topics[2]], polybus.ClosedError)
            assert set(error.sent) == set(topics[:2]) and set(error.sent.values()) == {error.message.id}
            assert repr(topics[2]) in str(error) and "confirmed by 2 of 3 topics" in str(error)
            # the same message again keeps its id: a broker with a dedup window drops the resend
            again = await recipients.send(error.message, to=list(error.sent))
            assert again == error.sent
        copies = 1 if broker.capabilities.dedup is not polybus.Support.UNSUPPORTED else 2
        readers = [broker.topic(topic).consumer("reader") for topic in topics]
        got_a, got_b, _ = await asyncio.gather(  # draining none: checks the failed topic got nothing
            drain(readers[0], copies), drain(readers[1], copies), drain(readers[2], 0)
        )
        for got in (got_a, got_b):
            assert {d.body for d in got} == {b"one"} and {d.id for d in got} == {error.message.id}


async def test_a_closed_broker_fails_every_topic_by_name(service_url: str) -> None:
    topics = [unique_name(t) for t in ("a", "b", "c")]
    broker = polybus.connect(service_url)
    async with broker, RecipientList(broker, topics) as recipients:
        await broker.aclose()
        with pytest.raises(RecipientListError) as caught:
            await recipients.send({"order": 1})
    error = caught.value
    assert list(error.failed) == topics and not error.sent
    assert all(isinstance(exc, polybus.ClosedError) for exc in error.failed.values())
    assert all(repr(topic) in str(error) for topic in topics)


# what follows needs no broker: checks done before anything is sent


async def test_a_recipient_list_refuses_bad_lists_before_sending() -> None:
    async with polybus.connect("memory://") as broker:
        with pytest.raises(polybus.ConfigurationError, match="more than once: a"):
            RecipientList(broker, ["a", "b", "a"])
        with pytest.raises(polybus.ConfigurationError, match="at least one"):
            RecipientList(broker, [])
        with pytest.raises(polybus.ConfigurationError, match="not the str"):
            RecipientList(broker, "orders")
        with pytest.raises(polybus.ConfigurationError, match="invalid topic name"):
            RecipientList(broker, ["good", "no spaces"])
        async with RecipientList(broker, ["a", "b"]) as recipients:
            with pytest.raises(polybus.ConfigurationError, match="not in this recipient list: 'z'"):
                await recipients.send(b"x", to=["a", "z"])
            with pytest.raises(polybus.EncodeError, match="own key"):
                await recipients.send(polybus.Message.of(b"x"), key="k")
            with pytest.raises(polybus.EncodeError):
                await recipients.send(object())
        assert "closed" in repr(recipients)
        with pytest.raises(polybus.ClosedError):
            await recipients.send(b"late")
        assert (await broker.topic("a").stats()).messages == 0  # nothing was sent


async def test_declare_checks_every_name_before_creating_anything() -> None:
    async with polybus.connect("memory://") as broker:
        with pytest.raises(polybus.ConfigurationError, match="invalid group name"):
            await declare(broker, {"orders": ["billing"], "invoices": ["bad group"]})
        with pytest.raises(polybus.NotFoundError):
            await broker.topic("orders").delete()  # it was never created


async def test_send_to_all_sends_once_to_each_topic() -> None:
    async with polybus.connect("memory://") as broker:
        await declare(broker, {"x": "reader", "y": ["reader"]})  # a single group as a str
        await declare(broker, {"x": ["reader"]})  # again: changes nothing
        ids = await send_to_all(broker, ["x", "y"], "hello", key="k")
        assert set(ids) == {"x", "y"}
        for name in ("x", "y"):
            (delivery,) = await drain(broker.topic(name).consumer("reader"), 1)
            assert delivery.text() == "hello" and delivery.id == ids[name]
