"""SQS-specific behaviour against a real endpoint: threads, visibility, batch failures, limits, DLQ."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

import polybus
from polybus.testing import unique_name

pytestmark = pytest.mark.polybus(timeout=120)


async def test_event_loop_keeps_ticking_while_consumers_long_poll(polybus_url: str) -> None:
    gaps: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        last = time.monotonic()
        while not stop.is_set():
            await asyncio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    async with polybus.connect(polybus_url) as broker:
        topic = broker.topic(unique_name("tick"))
        consumers = [topic.consumer(unique_name("g")) for _ in range(3)]
        for c in consumers:
            await c.open()
        tick = asyncio.create_task(ticker())
        # three consumers long-poll an empty queue (and one message arrives) while the ticker runs
        polls = [asyncio.create_task(c.receive(timeout=5)) for c in consumers]
        async with topic.producer() as producer:
            await asyncio.sleep(1.5)
            await producer.send(b"wake")
        results = await asyncio.gather(*polls)
        stop.set()
        await tick
        for d in results:
            assert d is not None and d.body == b"wake"
            await d.ack()
    assert len(gaps) > 100
    # A boto3 call on the loop would block it on every poll (a long poll for seconds, any other
    # call for the length of an HTTP round trip). A shared 2-core machine may preempt the process
    # now and then, so one tick in a hundred may be late, but never by a long poll's worth.
    late = sorted(g for g in gaps if g >= 0.05)
    assert len(late) <= len(gaps) // 100, f"{len(late)} of {len(gaps)} ticks late: {late}"
    assert max(gaps) < 0.25, f"the event loop was blocked for {max(gaps) * 1000:.0f} ms"


def _fail_one_entry(client: Any, operation: str, entries_key: str, sender_fault: bool = False) -> list[int]:
    """Make the endpoint "fail" the second entry of the next batch call: it is dropped from the request
    and reported as failed, as a server-side error would be. Returns the sizes of later batches."""
    state: dict[str, Any] = {"dropped": None}
    sizes: list[int] = []

    def drop(params: dict[str, Any], **_: Any) -> None:
        entries = params[entries_key]
        sizes.append(len(entries))
        if state["dropped"] is None and len(entries) > 1:
            state["dropped"] = entries.pop(1)["Id"]

    def report(parsed: dict[str, Any], **_: Any) -> None:
        if state["dropped"] is not None and not state.get("reported"):
            state["reported"] = True
            parsed.setdefault("Failed", []).append(
                {
                    "Id": state["dropped"],
                    "Code": "InternalError",
                    "Message": "injected",
                    "SenderFault": sender_fault,
                }
            )

    client.meta.events.register(
        f"provide-client-params.{client.meta.service_model.endpoint_prefix}.{operation}", drop
    )
    client.meta.events.register(f"after-call.{client.meta.service_model.endpoint_prefix}.{operation}", report)
    return sizes


async def test_a_failed_publish_entry_is_retried_alone(polybus_url: str) -> None:
    async with polybus.connect(polybus_url) as broker:
        topic = broker.topic(unique_name("pfail"))
        async with topic.consumer(unique_name("g")) as consumer, topic.producer() as producer:
            sizes = _fail_one_entry(broker.sns, "PublishBatch", "PublishBatchRequestEntries")  # type: ignore[attr-defined]
            ids = await producer.send_many([b"one", b"two", b"three"])
            assert sizes == [3, 1], f"expected the batch of 3, then the failed entry alone: {sizes}"
            got = []
            while (d := await consumer.receive(timeout=2)) is not None:
                got.append(d)
                await d.ack()
    assert sorted(d.body for d in got) == [b"one", b"three", b"two"], "lost or duplicated"
    assert {d.id for d in got} == set(ids)


async def test_a_refused_publish_entry_raises_publish_error(polybus_url: str) -> None:
    async with polybus.connect(polybus_url) as broker:
        topic = broker.topic(unique_name("prefuse"))
        async with topic.producer() as producer:
            _fail_one_entry(broker.sns, "PublishBatch", "PublishBatchRequestEntries", sender_fault=True)  # type: ignore[attr-defined]
            with pytest.raises(polybus.PublishError, match="injected"):
                await producer.send_many([b"one", b"two", b"three"])


async def test_a_failed_delete_entry_is_retried_and_nothing_comes_back(url_with: Any) -> None:
    async with polybus.connect(url_with(visibility_timeout=1)) as broker:
        topic = broker.topic(unique_name("dfail"))
        group = unique_name("g")
        async with topic.consumer(group) as consumer, topic.producer() as producer:
            await producer.send_many([b"a", b"b", b"c"])
            sizes = _fail_one_entry(broker.sqs, "DeleteMessageBatch", "Entries")  # type: ignore[attr-defined]
            held = [d for d in [await consumer.receive(timeout=5) for _ in range(3)] if d is not None]
            assert len(held) == 3
            for d in held:
                await d.ack()
            await asyncio.sleep(0.5)
            assert sizes[:2] == [3, 1], sizes
            assert consumer.ack_failures == 0  # type: ignore[attr-defined]
            # one visibility timeout and more later, nothing is redelivered and nothing was delivered twice
            assert await consumer.receive(timeout=2.5) is None
        stats = await topic.stats()
    assert stats.groups[group].backlog == 0 and stats.groups[group].in_flight == 0


async def test_payload_limit_counts_the_wire_encoding(url_with: Any) -> None:
    async with polybus.connect(url_with(max_message_size=2048)) as broker:
        assert broker.capabilities.max_message_size == 2048
        topic = broker.topic(unique_name("limit"))
        async with topic.consumer(unique_name("g")) as consumer, topic.producer() as producer:
            # 1,600 binary bytes are 2,136 in base64: too large on the wire, refused before sending
            with pytest.raises(polybus.MessageTooLargeError) as info:
                await producer.send(bytes(range(256)) * 6 + bytes(64))
            assert info.value.limit == 2048
            await producer.send(b"x" * 1800)  # text travels as is
            got = await consumer.receive(timeout=5)
            assert got is not None and got.body == b"x" * 1800
            await got.ack()
            assert await consumer.receive(timeout=1) is None


async def test_many_headers_and_awkward_names_survive(polybus_url: str) -> None:
    headers = {f"h-{i}": f"v{i}" for i in range(14)} | {"with space": "1", "empty": "", "ünïcode": "é"}
    async with polybus.connect(polybus_url) as broker:
        topic = broker.topic(unique_name("hdr"))
        async with topic.consumer(unique_name("g")) as consumer, topic.producer() as producer:
            await producer.send(b"\x00binary", key="k1", headers=headers)
            d = await consumer.receive(timeout=5)
            assert d is not None
            await d.ack()
    assert d.body == b"\x00binary" and d.key == "k1"
    assert {k: v for k, v in d.headers.items() if k != "content-type"} == headers


async def test_listener_queue_is_removed_on_close(polybus_url: str, raw: Any) -> None:
    async with polybus.connect(polybus_url) as broker:
        topic = broker.topic(unique_name("tmp"))
        async with topic.consumer() as listener:
            url = listener.queue.url  # type: ignore[attr-defined]
            await asyncio.to_thread(raw.sqs.get_queue_attributes, QueueUrl=url, AttributeNames=["All"])
        listed = await asyncio.to_thread(raw.sns.list_subscriptions_by_topic, TopicArn=topic.arn)  # type: ignore[attr-defined]
        assert listed["Subscriptions"] == []
    with pytest.raises(raw.sqs.exceptions.QueueDoesNotExist):
        await asyncio.to_thread(raw.sqs.get_queue_attributes, QueueUrl=url, AttributeNames=["All"])


async def test_reject_goes_to_the_dead_letter_queue_when_configured(url_with: Any, raw: Any) -> None:
    async with polybus.connect(url_with(dead_letter_after=5)) as broker:
        assert broker.capabilities.dead_letter is polybus.Support.NATIVE
        topic = broker.topic(unique_name("dlq"))
        async with topic.consumer(unique_name("g")) as consumer, topic.producer() as producer:
            await producer.send(b"poison", headers={"why": "test"})
            d = await consumer.receive(timeout=5)
            assert d is not None
            await d.reject()
            assert await consumer.receive(timeout=1.5) is None
            dlq_url = consumer.queue.dlq_url  # type: ignore[attr-defined]
        reply = await asyncio.to_thread(
            raw.sqs.receive_message, QueueUrl=dlq_url, WaitTimeSeconds=2, MessageAttributeNames=["All"]
        )
        await topic.delete()
    [dead] = reply["Messages"]
    assert dead["Body"] == "poison"
    assert dead["MessageAttributes"]["why"]["StringValue"] == "test"
    assert dead["MessageAttributes"]["polybus-id"]["StringValue"] == d.id
