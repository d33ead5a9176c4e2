"""Group-send cases: ``Topic.send_to_group`` reaches the named group only, ids, keys and headers kept."""

from __future__ import annotations

import polybus
from polybus import Message, Support
from polybus.testing.contract._config import ContractConfig
from polybus.testing.contract._helpers import _caps, _scratch, collect, expect_nothing, one

__all__ = ["GroupSendCases"]


class GroupSendCases:
    """Mixin of :class:`~polybus.testing.contract.BrokerContract`."""

    async def test_group_send_is_declared(self, polybus_url: str) -> None:
        # every broker has it: natively, or through the core's header emulation
        assert (await _caps(polybus_url)).group_send in (Support.NATIVE, Support.EMULATED)

    async def test_send_to_group_reaches_that_group_only(self, polybus_url: str, cfg: ContractConfig) -> None:
        n = cfg.count(40)
        async with polybus.connect(polybus_url) as broker:
            topic = _scratch(broker, "to-group")
            async with (
                topic.consumer("billing") as billing,
                topic.consumer("email") as email,
                topic.consumer() as listener,
                topic.producer() as producer,
            ):
                sent = [
                    Message(f"m{i}".encode(), {"content-type": "text/plain", "x-n": str(i)}, f"k{i % 3}")
                    for i in range(n)
                ]
                ids = await topic.send_to_group("billing", sent)
                assert ids == [m.id for m in sent]
                got = await collect(billing, n, cfg.receive_timeout + n / 20)
                assert sorted(d.id for d in got) == sorted(ids)
                by_id = {m.id: m for m in sent}
                for d in got:
                    m = by_id[d.id]
                    assert (d.body, d.key, d.headers.get("x-n")) == (m.body, m.key, m.headers["x-n"])
                    assert polybus.GROUP_HEADER not in d.headers
                    assert d.group == "billing"
                    assert d.broker is broker
                await expect_nothing(email, cfg.quiet_period)
                await expect_nothing(listener, 0.2)
                # the others are not stuck behind what they skipped: the next plain send reaches all
                await producer.send(b"to everyone")
                for consumer in (billing, email, listener):
                    d = await one(consumer, cfg.receive_timeout)
                    assert d.body == b"to everyone"
                    await d.ack()
                await expect_nothing(billing, 0.2)

    async def test_send_to_group_resends_an_id_the_broker_has_seen(
        self, polybus_url: str, cfg: ContractConfig
    ) -> None:
        # a redrive re-sends an id on purpose: brokers that drop re-sent ids (dedup) must keep it
        async with polybus.connect(polybus_url) as broker:
            topic = _scratch(broker, "to-group-again")
            async with topic.consumer("billing") as billing, topic.producer() as producer:
                message = Message(b"once more", {"content-type": "text/plain"})
                await producer.send_many([message])
                first = await one(billing, cfg.receive_timeout)
                await first.ack()
                await topic.send_to_group("billing", [message])
                again = await one(billing, cfg.receive_timeout)
                await again.ack()
                assert (again.id, again.body, again.attempt) == (message.id, b"once more", 1)

    async def test_send_to_group_checks_its_arguments(self, polybus_url: str) -> None:
        async with polybus.connect(polybus_url) as broker:
            topic = _scratch(broker, "to-group-args")
            assert await topic.send_to_group("g", []) == []
            try:
                await topic.send_to_group("bad name!", [Message(b"x")])
            except polybus.ConfigurationError:
                pass
            else:
                raise AssertionError("a bad group name was accepted")
