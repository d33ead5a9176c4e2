"""The core's reply path on memory://: an inbox receives what ``Broker.reply`` sends to its address."""

import polybus
from polybus import CORRELATION_HEADER, REPLY_TO_HEADER, Message
from polybus.testing import unique_name


async def test_a_reply_sent_to_a_requests_address_reaches_its_inbox() -> None:
    async with polybus.connect("memory://") as broker:
        name = unique_name("requests")
        async with broker.topic(name).consumer("responders") as responders, broker.inbox() as inbox:
            sent = Message.of({"q": 1}, headers={CORRELATION_HEADER: "c1"})
            await inbox.request(name, sent)
            request = await responders.receive(timeout=5)
            assert request is not None and request.headers[REPLY_TO_HEADER] == inbox.address
            await broker.reply(
                request.headers[REPLY_TO_HEADER], Message.of({"a": 2}, headers={CORRELATION_HEADER: "c1"})
            )
            await request.ack()
            reply = await inbox.receive(timeout=5)
            assert reply is not None and reply.json() == {"a": 2} and reply.settled
            assert reply.headers[CORRELATION_HEADER] == "c1"
        assert broker.capabilities.request_reply is polybus.Support.EMULATED


async def test_closing_an_emulated_inbox_deletes_its_topic() -> None:
    async with polybus.connect("memory://") as broker:
        async with broker.inbox() as inbox:
            address = inbox.address
            assert address.startswith("polybus-inbox-")
        try:
            await broker.topic(address).delete()
        except polybus.NotFoundError:
            pass
        else:
            raise AssertionError("the inbox topic outlived its inbox")
