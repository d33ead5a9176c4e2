"""ReconnectPolicy: growing, jittered, bounded delays; retries until success or gives up and raises."""

import pytest

import polybus


def test_delays_grow_with_jitter_up_to_the_maximum() -> None:
    policy = polybus.ReconnectPolicy(initial=0.1, maximum=1.0, multiplier=2.0, jitter=0.5, max_attempts=8)
    delays = list(policy.delays())
    assert len(delays) == 7
    caps = [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0]
    for delay, cap in zip(delays, caps, strict=True):
        assert cap * 0.5 <= delay <= cap


async def test_run_retries_then_succeeds() -> None:
    calls = []
    reconnects = []

    async def op() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise polybus.BrokerConnectionError("down")
        return "ok"

    async def before_retry(exc: BaseException) -> None:
        reconnects.append(type(exc).__name__)

    policy = polybus.ReconnectPolicy(initial=0.001, maximum=0.01)
    assert await policy.run(op, before_retry=before_retry) == "ok"
    assert len(calls) == 3
    assert reconnects == ["BrokerConnectionError", "BrokerConnectionError"]


async def test_run_gives_up_and_raises() -> None:
    async def op() -> None:
        raise polybus.BrokerConnectionError("still down")

    policy = polybus.ReconnectPolicy(initial=0.001, max_attempts=3)
    with pytest.raises(polybus.BrokerConnectionError, match="still down"):
        await policy.run(op)


async def test_other_errors_are_not_retried() -> None:
    calls = []

    async def op() -> None:
        calls.append(1)
        raise polybus.NotFoundError("gone")

    with pytest.raises(polybus.NotFoundError):
        await polybus.ReconnectPolicy(initial=0.001).run(op)
    assert len(calls) == 1
