"""The adapter interface the core owns: option validation, ``start``, settings, one backoff, the
delay heap and ack coalescing (through a memory consumer that opts in), and what
``polybus.adapter`` exports."""

from __future__ import annotations

import asyncio
import time
from typing import Any, ClassVar

import pydantic
import pytest

import polybus
import polybus.adapter as adapter
from polybus._memory import MemoryConsumer, MemoryTopic
from polybus.adapter import AdapterSettings, DelayHeap, OptionsModel, Outage, ReconnectPolicy
from polybus.testing import unique_name

EXPECTED_ADAPTER_API = {
    "BYTES", "BYTES_HEADER_SIZE", "CONTENT_TYPE", "ID_HEADER", "INBOX_PREFIX", "JSON", "TEXT",
    "AdapterSettings",
    "Broker", "Capabilities", "Consumer", "DelayHeap", "Delivery", "GroupStats", "Inbox", "Message", "MiB",
    "NoOptions", "OptionsModel", "Outage", "Outcome", "Producer", "PushInbox", "REPLY_TO_HEADER",
    "ReconnectPolicy",
    "Start", "Support",
    "TlsSettings", "Topic", "TopicStats", "check_name", "decode_body", "describe_error", "encode_body",
    "new_message_id", "redact_url", "register_scheme", "split_url", "tls_context", "url_options",
}  # fmt: skip


def test_adapter_api_is_pinned_and_documented() -> None:
    assert set(adapter.__all__) == EXPECTED_ADAPTER_API
    for name in adapter.__all__:
        obj = getattr(adapter, name)
        if name != "Start" and (isinstance(obj, type) or callable(obj)):
            assert obj.__doc__, f"polybus.adapter.{name} has no docstring"


# -- per-call options ------------------------------------------------------------------------------


async def test_unknown_options_name_the_option_and_the_adapter() -> None:
    async with polybus.connect("memory://") as broker:
        topic = broker.topic(unique_name("t"))
        with pytest.raises(
            polybus.ConfigurationError, match=r"unknown consumer option 'colour' for memory://"
        ):
            topic.consumer("g", colour="blue")
        with pytest.raises(polybus.ConfigurationError, match=r"'linger'.*known producer options: none"):
            topic.producer(linger=1)
        with pytest.raises(polybus.ConfigurationError, match="prefetch"):
            topic.consumer("g", prefetch=0)


class _NamedOptions(OptionsModel):
    name: str = pydantic.Field(default="x", min_length=1)
    """A name."""


class _OptionTopic(MemoryTopic):
    consumer_options = _NamedOptions
    seen: ClassVar[list[Any]] = []

    def _consumer(self, group: str | None, prefetch: int, start: Any, options: Any) -> MemoryConsumer:
        self.seen.append((start, options))
        return super()._consumer(group, prefetch, start, options)


async def test_declared_options_are_validated_and_passed_as_a_model() -> None:
    async with polybus.connect("memory://") as broker:
        topic = _OptionTopic(broker, unique_name("t"))  # type: ignore[arg-type]
        topic.consumer("g", name="worker-1")
        assert topic.seen[-1] == ("latest", _NamedOptions(name="worker-1"))
        with pytest.raises(polybus.ConfigurationError) as info:
            topic.consumer("g", name="")
        message = str(info.value)
        assert "consumer option 'name'" in message and "at least 1 character" in message
        assert "known consumer options: name" in message
        assert "{" not in message  # no raw pydantic dicts


async def test_start_is_checked_against_the_replay_capability() -> None:
    async with polybus.connect("memory://") as broker:
        topic = broker.topic(unique_name("t"))
        assert not broker.capabilities.replay
        with pytest.raises(polybus.UnsupportedCapabilityError, match='start="earliest"'):
            topic.consumer("g", start="earliest")
        with pytest.raises(polybus.ConfigurationError, match="start must be"):
            topic.consumer("g", start="beginning")  # type: ignore[arg-type]
        assert topic.consumer("g", start="latest").group == "g"


# -- settings --------------------------------------------------------------------------------------


class _DemoSettings(AdapterSettings):
    schemes: ClassVar[tuple[str, ...]] = ("demo", "demos")
    adapter_name: ClassVar[str] = "demo"

    host: str = "localhost"
    password: pydantic.SecretStr | None = None
    prefetch: int = pydantic.Field(default=7, ge=1)

    @classmethod
    def url_values(cls, parts: Any) -> dict[str, Any]:
        values: dict[str, Any] = {"host": parts.hostname or "localhost"}
        if parts.password:
            values["password"] = parts.password
        return values


def test_settings_from_url_options_and_reconnect_fields() -> None:
    s = _DemoSettings.from_url("demo://u:pw@h1?prefetch=3&reconnect_initial=0.5", reconnect_give_up_after=9)
    assert (s.host, s.prefetch, s.max_message_size) == ("h1", 3, 1024 * 1024)
    assert s.reconnect == ReconnectPolicy(initial=0.5, give_up_after=9.0)
    assert _DemoSettings.from_url("demo://h").prefetch == 7
    assert "pw" not in repr(s)


def test_settings_errors_name_the_option_and_hide_the_password() -> None:
    with pytest.raises(polybus.ConfigurationError) as info:
        _DemoSettings.from_url("demo://u:hunter2@h?prefetch=-1&colour=red")
    text = str(info.value)
    assert "prefetch" in text and "colour" in text and "invalid demo options" in text
    assert "hunter2" not in text and "u:***@h" in text
    with pytest.raises(polybus.ConfigurationError, match="handles demo:// and demos://, not other://"):
        _DemoSettings.from_url("other://h")
    with pytest.raises(polybus.ConfigurationError, match="reconnect_initial"):
        _DemoSettings.from_url("demo://h?reconnect_initial=-1")


# -- one backoff, one delay heap ---------------------------------------------------------------------


async def test_outage_backs_off_then_gives_up_and_resets_after_a_success() -> None:
    outage = Outage(ReconnectPolicy(initial=0.01, maximum=0.02, jitter=0, max_attempts=3), "demo fetch")
    error = polybus.BrokerConnectionError("down")
    assert outage.failed(error) == pytest.approx(0.01)
    assert outage.active and outage.next_try is not None
    assert await outage.ready(time.monotonic() + 5)
    assert outage.failed(error) == pytest.approx(0.02)
    with pytest.raises(polybus.BrokerConnectionError):
        outage.failed(error)  # the third try: the policy gives up
    assert not outage.active
    assert outage.failed(error) == pytest.approx(0.01)  # a new outage starts over
    outage.ended()
    assert outage.next_try is None and await outage.ready(0.0)


async def test_outage_gives_up_after_its_time_and_ready_honours_the_deadline() -> None:
    outage = Outage(ReconnectPolicy(initial=1.0, jitter=0, give_up_after=1.5), "demo")
    outage.failed(polybus.BrokerConnectionError("down"))
    started = time.monotonic()
    assert not await outage.ready(started + 0.05)  # the next try is later than the deadline
    assert time.monotonic() - started < 0.9
    with pytest.raises(polybus.BrokerConnectionError):
        outage.failed(polybus.BrokerConnectionError("down"))  # 1 s + 2 s would pass give_up_after


def test_delay_heap_pops_due_items_in_order_and_removes_by_predicate() -> None:
    heap: DelayHeap[str] = DelayHeap()
    assert not heap and heap.next_due() is None
    for due, item in [(3.0, "c"), (1.0, "a"), (2.0, "b"), (1.0, "a2"), (5.0, "e")]:
        heap.push(due, item)
    assert len(heap) == 5 and heap.next_due() == 1.0
    assert heap.pop_due(2.0) == ["a", "a2", "b"]
    assert heap.remove(lambda item: item == "e") == ["e"]
    assert heap.items() == ["c"] and heap.next_due() == 3.0
    assert heap.clear() == ["c"] and not heap


# -- ack coalescing ----------------------------------------------------------------------------------


class _CoalescingConsumer(MemoryConsumer):
    """A memory consumer that opts in to the core's ack coalescing and records each batch."""

    ack_batch_size = 5

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.batches: list[list[str]] = []
        self.fail_next = False

    async def _ack_batch(self, deliveries: list[polybus.Delivery]) -> None:
        if self.fail_next:
            self.fail_next = False
            raise polybus.BrokerConnectionError("ack lost")
        self.batches.append([d.id for d in deliveries])
        for delivery in deliveries:
            await self._settle_native(delivery, polybus.Outcome.ACK, None)


async def test_acks_are_queued_then_sent_in_batches_never_before_the_ack() -> None:
    async with polybus.connect("memory://") as broker:
        topic = broker.topic(unique_name("t"))
        consumer = _CoalescingConsumer(topic, "g", 100)
        assert consumer._coalesces_acks and not MemoryConsumer._coalesces_acks
        async with consumer, topic.producer() as producer:
            ids = await producer.send_many([b"%d" % i for i in range(12)])
            got = [await consumer.receive(timeout=2) for _ in range(12)]
            assert all(got)
            for delivery in got[:4]:
                await delivery.ack()  # queued: nothing was sent yet
            assert consumer.batches == []
            for delivery in got[4:7]:
                await delivery.ack()  # the fifth fills a batch, sent by ack() itself
            assert consumer.batches == [ids[:5]]
            await asyncio.sleep(0.01)
            assert [i for batch in consumer.batches for i in batch] == ids[:7]
            assert [len(b) for b in consumer.batches] == [5, 2]  # a whole batch (5) goes at once
            for delivery in got[7:11]:
                await delivery.ack()
        # closing sends what is queued; the unsettled one (12th) goes back to the group
        assert [i for batch in consumer.batches for i in batch] == ids[:11]
        stats = await topic.stats()
        assert stats.groups["g"].backlog == 1


async def test_a_failed_ack_batch_is_logged_and_the_consumer_keeps_working(caplog: Any) -> None:
    async with polybus.connect("memory://") as broker:
        topic = broker.topic(unique_name("t"))
        consumer = _CoalescingConsumer(topic, "g", 100)
        async with consumer, topic.producer() as producer:
            await producer.send_many([b"a", b"b"])
            consumer.fail_next = True
            first = await consumer.receive(timeout=2)
            assert first is not None
            await first.ack()
            await asyncio.sleep(0.01)
            assert "could not ack 1 deliveries" in caplog.text
            second = await consumer.receive(timeout=2)
            assert second is not None
            await second.ack()
            await consumer._flush_acks()
            assert consumer.batches == [[second.id]]


async def test_drop_buffered_removes_only_matching_fetched_deliveries() -> None:
    async with polybus.connect("memory://") as broker:
        topic = broker.topic(unique_name("t"))
        async with topic.consumer("g", prefetch=10) as consumer, topic.producer() as producer:
            await producer.send_many([b"keep", b"drop", b"keep"])
            first = await consumer.receive(timeout=2)  # fetches all three, hands out one
            assert first is not None and first.body == b"keep"
            dropped = consumer._drop_buffered(lambda d: d.body == b"drop")
            assert [d.body for d in dropped] == [b"drop"]
            assert [d.body for d in consumer.held()] == [b"keep", b"keep"]


async def test_a_cancelled_close_still_sends_the_acks_and_hands_back_the_rest() -> None:
    async with polybus.connect("memory://") as broker:
        topic = broker.topic(unique_name("t"))
        consumer = _CoalescingConsumer(topic, "g", 100)
        async with topic.producer() as producer:
            await consumer.open()
            ids = await producer.send_many([b"a", b"b", b"c"])
            got = [await consumer.receive(timeout=2) for _ in ids]
            assert got[0] is not None
            await got[0].ack()  # queued
            closing = asyncio.ensure_future(consumer.aclose())
            await asyncio.sleep(0)
            closing.cancel()
            with pytest.raises(asyncio.CancelledError):
                await closing
            await asyncio.sleep(0.05)  # the shielded hand-back finishes on its own
            assert consumer.batches == [ids[:1]]
            stats = await topic.stats()
            assert stats.groups["g"].backlog == 2 and stats.groups["g"].in_flight == 0
