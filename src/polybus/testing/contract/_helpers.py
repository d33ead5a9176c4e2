"""Helpers of the contract cases: receive/collect, scratch topics, capability checks."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable

import pydantic
import pytest

import polybus
from polybus import Capabilities, Delivery, Support
from polybus.testing._names import unique_name
from polybus.testing.contract._config import ContractConfig

__all__ = ["bodies", "collect", "expect_nothing", "needs", "one"]


class Model(pydantic.BaseModel):
    order: int
    item: str


async def collect(consumer: polybus.Consumer, n: int, timeout: float, *, ack: bool = True) -> list[Delivery]:
    """Receive until ``n`` deliveries arrived or ``timeout`` passed; ack each (unless told not to)."""
    got: list[Delivery] = []
    deadline = time.monotonic() + timeout
    while len(got) < n:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        delivery = await consumer.receive(timeout=min(remaining, 1.0))
        if delivery is None:
            continue
        got.append(delivery)
        if ack:
            await delivery.ack()
    return got


async def expect_nothing(consumer: polybus.Consumer, period: float) -> None:
    """Fail if anything arrives within ``period`` seconds."""
    delivery = await consumer.receive(timeout=period)
    assert delivery is None, f"expected no delivery, got {delivery!r} body={delivery.body[:80]!r}"


async def one(consumer: polybus.Consumer, timeout: float) -> Delivery:
    """The next delivery; fails the test if none arrives within ``timeout`` seconds."""
    delivery = await consumer.receive(timeout=timeout)
    assert delivery is not None, f"no delivery within {timeout}s on {consumer!r}"
    return delivery


_SCRATCH: list[str] = []
"""Topics the running case made, deleted after it so that real servers do not fill up."""


def _scratch(broker: polybus.Broker, prefix: str) -> polybus.Topic:
    topic = broker.topic(unique_name(prefix))
    _SCRATCH.append(topic.name)
    return topic


async def _delete_topics(url: str, names: list[str]) -> None:
    async with polybus.connect(url) as broker:
        for name in names:
            with contextlib.suppress(polybus.PolybusError):
                await broker.topic(name).delete()


def needs(caps: Capabilities, name: str) -> Support:
    """The support level of capability ``name``; skips the test where it is unsupported."""
    level: Support = getattr(caps, name)
    if not level:
        pytest.skip(f"broker declares {name}=unsupported")
    return level


async def polybus_errors_only(what: str, operation: Awaitable[object], timeout: float) -> str:
    """Await ``operation``: it may succeed or raise a :class:`~polybus.PolybusError`; anything else
    (a client library's exception, or no answer within ``timeout``) fails the test. Returns how it
    ended, for the test output."""
    try:
        async with asyncio.timeout(timeout):
            await operation
    except polybus.PolybusError as exc:
        return f"{what}: {type(exc).__name__}"
    except TimeoutError:
        pytest.fail(f"{what} did not finish within {timeout}s")
    except Exception as exc:
        kind = f"{type(exc).__module__}.{type(exc).__qualname__}"
        pytest.fail(f"{what} raised {kind}, not a PolybusError: {exc!r}")
    return f"{what}: ok"


def bodies(deliveries: list[Delivery]) -> list[bytes]:
    """The bodies of ``deliveries``, in order."""
    return [d.body for d in deliveries]


async def _fresh(producer: polybus.Producer, consumer: polybus.Consumer, cfg: ContractConfig) -> Delivery:
    await producer.send(b"y")
    return await one(consumer, cfg.receive_timeout)


async def _caps(url: str) -> Capabilities:
    """The capabilities of the broker at ``url``, read once it is open (an adapter may refine them
    on connecting: NATS reads the server's maximum payload)."""
    async with polybus.connect(url) as broker:
        return broker.capabilities
