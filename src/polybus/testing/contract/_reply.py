"""Reply cases: inboxes and ``Broker.reply``, on the broker's native reply path or the emulation."""

from __future__ import annotations

import asyncio

import pytest

import polybus
from polybus import CORRELATION_HEADER, REPLY_TO_HEADER, Message, Support
from polybus.testing.contract._config import ContractConfig
from polybus.testing.contract._helpers import _scratch, one

__all__ = ["ReplyCases"]


async def _answer(broker: polybus.Broker, request: polybus.Delivery, body: object) -> None:
    headers = {CORRELATION_HEADER: request.headers[CORRELATION_HEADER]}
    await broker.reply(request.headers[REPLY_TO_HEADER], Message.of(body, headers=headers))


async def _inbox_topic_exists(broker: polybus.Broker, address: str) -> bool:
    try:
        await broker.topic(address).stats()
    except polybus.NotFoundError:
        return False
    return True


class ReplyCases:
    """Mixin of :class:`~polybus.testing.contract.BrokerContract`."""

    async def test_a_requests_reply_reaches_its_inbox_settled(
        self, polybus_url: str, cfg: ContractConfig
    ) -> None:
        async with polybus.connect(polybus_url) as broker, polybus.connect(polybus_url) as responder:
            topic = _scratch(broker, "requests")
            async with (
                responder.topic(topic.name).consumer("responders") as consumer,
                broker.inbox() as inbox,
            ):
                sent = Message.of({"q": 1}, headers={CORRELATION_HEADER: "c-1"}, key="k")
                request_id = await inbox.request(topic.name, sent)
                request = await one(consumer, cfg.receive_timeout)
                assert request.id == request_id
                assert request.headers[CORRELATION_HEADER] == "c-1"
                assert REPLY_TO_HEADER in request.headers
                await _answer(responder, request, {"a": 2})
                await request.ack()
                reply = await inbox.receive(timeout=cfg.receive_timeout)
                assert reply is not None, "no reply arrived"
                assert reply.json() == {"a": 2}
                assert reply.headers[CORRELATION_HEADER] == "c-1"
                assert reply.settled
                with pytest.raises(polybus.DeliveryStateError):
                    await reply.ack()
                assert await inbox.receive(timeout=0.2) is None

    async def test_two_inboxes_never_see_each_others_replies(
        self, polybus_url: str, cfg: ContractConfig
    ) -> None:
        async with polybus.connect(polybus_url) as broker, polybus.connect(polybus_url) as other:
            topic = _scratch(broker, "requests")
            async with (
                broker.topic(topic.name).consumer("responders") as consumer,
                broker.inbox() as first,
                other.inbox() as second,
                broker.inbox() as third,  # a second inbox on the same connection
            ):
                inboxes = {"first": first, "second": second, "third": third}
                for name, inbox in inboxes.items():
                    await inbox.request(topic.name, Message.of(name, headers={CORRELATION_HEADER: name}))
                for _ in inboxes:
                    request = await one(consumer, cfg.receive_timeout)
                    await _answer(broker, request, f"reply to {request.text()}")
                    await request.ack()
                for name, inbox in inboxes.items():
                    reply = await inbox.receive(timeout=cfg.receive_timeout)
                    assert reply is not None, f"the {name} inbox got no reply"
                    assert reply.text() == f"reply to {name}"
                    assert reply.headers[CORRELATION_HEADER] == name
                for name, inbox in inboxes.items():
                    extra = await inbox.receive(timeout=cfg.quiet_period / 3)
                    assert extra is None, f"the {name} inbox got someone else's reply: {extra.body!r}"

    async def test_a_reply_to_a_closed_inbox_is_no_error_and_leaves_nothing(
        self, polybus_url: str, cfg: ContractConfig
    ) -> None:
        async with polybus.connect(polybus_url) as broker, polybus.connect(polybus_url) as responder:
            topic = _scratch(broker, "requests")
            emulated = broker.capabilities.request_reply is Support.EMULATED
            async with responder.topic(topic.name).consumer("responders") as consumer:
                async with broker.inbox() as inbox:
                    await inbox.request(topic.name, Message.of(b"q", headers={CORRELATION_HEADER: "c"}))
                    request = await one(consumer, cfg.receive_timeout)
                    await request.ack()
                    await _answer(responder, request, b"in time")  # the responder's path is warm
                    assert (await inbox.receive(timeout=cfg.receive_timeout)) is not None
                    if emulated:
                        assert await _inbox_topic_exists(broker, inbox.address)
                assert inbox.closed
                with pytest.raises(polybus.ClosedError):
                    await inbox.receive(timeout=0.1)
                if emulated:  # the broker can tell: the inbox's topic is gone
                    assert not await _inbox_topic_exists(broker, inbox.address), (
                        "the inbox outlived its close"
                    )
                await _answer(responder, request, b"late")  # no error for the responder
                async with polybus.connect(polybus_url) as fresh:  # nor for one that never replied there
                    await _answer(fresh, request, b"later")
                await asyncio.sleep(0.2)
                if emulated:
                    assert not await _inbox_topic_exists(broker, inbox.address), (
                        "a late reply re-created the inbox"
                    )

    async def test_a_reply_to_an_address_that_is_no_inbox_is_refused(self, polybus_url: str) -> None:
        async with polybus.connect(polybus_url) as broker:
            topic = _scratch(broker, "victim")
            await topic.ensure()
            with pytest.raises(polybus.ConfigurationError):
                await broker.reply(topic.name, Message.of(b"not a reply"))

    async def test_closing_the_broker_closes_its_inboxes(self, polybus_url: str) -> None:
        async with polybus.connect(polybus_url) as broker:
            inbox = broker.inbox()
            await inbox.open()
            emulated = broker.capabilities.request_reply is Support.EMULATED
        assert inbox.closed
        await inbox.aclose()  # idempotent
        if emulated:
            async with polybus.connect(polybus_url) as other:
                assert not await _inbox_topic_exists(other, inbox.address), "the inbox outlived its broker"
