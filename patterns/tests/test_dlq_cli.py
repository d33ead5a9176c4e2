"""``polybus dlq list|show|replay|purge`` through ``main(argv)`` on every broker, and once as a process."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import subprocess
import sys
import urllib.parse

import pydantic
import pytest
from polybus_patterns import DeadLetters, RetryPolicy, dead_letter_topic, retry

import polybus
from polybus._cli import main
from polybus.testing import unique_name
from polybus.testing.plugin import broker_url


class Order(pydantic.BaseModel):
    id: int


async def _dead_letters(url: str, topic: str, group: str, n: int) -> list[str]:
    """Send ``n`` orders to ``topic`` and let ``group`` dead-letter each (ValueError; KeyError for id 0)."""
    failed: list[str] = []
    app = polybus.App(middlewares=[retry(RetryPolicy(max_attempts=1))])

    @app.subscribe(topic, group=group, concurrency=4)
    async def handle(order: Order, delivery: polybus.Delivery) -> None:
        failed.append(delivery.id)
        raise (KeyError if order.id == 0 else ValueError)(f"order {order.id}")

    async with polybus.connect(url) as broker:
        consumers = await app.start(broker)
        stop = asyncio.Event()
        task = asyncio.create_task(app.run(broker, stop=stop, consumers=consumers, grace_period=5))
        async with broker.topic(topic).producer() as producer:
            ids = await producer.send_many([Order(id=i) for i in range(n)])
        dead = DeadLetters(broker, topic, group)
        for _ in range(600):
            if await dead.count() >= n:
                break
            await asyncio.sleep(0.1)
        stop.set()
        await task
        assert await dead.count() == n
    return ids


async def _receive_ids(url: str, topic: str, group: str, n: int) -> list[str]:
    async with polybus.connect(url) as broker, broker.topic(topic).consumer(group) as consumer:
        got = []
        while len(got) < n:
            delivery = await consumer.receive(timeout=15)
            assert delivery is not None, f"only {got} arrived"
            got.append(delivery.id)
            await delivery.ack()
        return got


def _password(url: str) -> str | None:
    return urllib.parse.urlsplit(url).password


def test_dlq_commands_on_every_broker(
    service_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    topic, group = unique_name("cli"), "billing"
    ids = asyncio.run(_dead_letters(service_url, topic, group, 5))

    assert main(["dlq", "list", service_url, topic, group]) == 0
    out = capsys.readouterr().out
    assert f"{topic}/{group}: 5" in out and "ValueError" in out and "KeyError" in out and "oldest" in out
    assert main(["dlq", "list", service_url, topic]) == 0
    assert f"{topic}/{group}: 5" in capsys.readouterr().out
    assert main(["dlq", "list", service_url]) == 0  # every dead-letter topic, from the index
    assert f"{topic}/{group}: 5" in capsys.readouterr().out

    assert main(["dlq", "show", service_url, topic, group, "-n", "2"]) == 0
    out = capsys.readouterr().out
    assert out.count("polybus-dlq-error-type") == 2 and "payload (" in out

    assert main(["dlq", "replay", service_url, topic, group, "--id", ids[3]]) == 0
    assert "replayed 1 dead letter(s)" in capsys.readouterr().out
    assert asyncio.run(_receive_ids(service_url, topic, group, 1)) == [ids[3]]
    assert main(["dlq", "replay", service_url, topic, group, "--id", "no-such-id"]) == 1

    monkeypatch.setattr(sys, "stdin", io.StringIO("n\n"))
    assert main(["dlq", "purge", service_url, topic, group]) == 1  # not confirmed
    assert "nothing purged" in capsys.readouterr().out
    assert main(["dlq", "purge", service_url, topic, group, "--error-type", "KeyError", "--yes"]) == 0
    assert "purged 1 dead letter(s)" in capsys.readouterr().out
    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n"))
    assert main(["dlq", "purge", service_url, topic, group]) == 0
    assert "purged 3 dead letter(s)" in capsys.readouterr().out
    assert main(["dlq", "list", service_url, topic, group]) == 1  # nothing left
    assert main(["dlq", "purge", service_url, topic, group, "--yes"]) == 1
    out, err = capsys.readouterr()
    password = _password(service_url)
    if password:  # the URL has one: never printed
        assert f":{password}@" not in out + err
    asyncio.run(_drop(service_url, topic))


async def _drop(url: str, topic: str) -> None:
    """Delete ``topic`` and its groups' dead-letter topics (shared brokers)."""
    async with polybus.connect(url) as broker:
        try:
            groups = list((await broker.topic(topic).stats()).groups)
        except polybus.PolybusError:
            groups = []
        for name in [*(dead_letter_topic(topic, g) for g in groups), topic]:
            with contextlib.suppress(polybus.PolybusError):
                await broker.topic(name).delete()


def test_dlq_errors_exit_2(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    assert main(["dlq", "list", "nosuch://x"]) == 2
    assert main(["dlq", "replay", "memory://", "t", "g", "--limit", "0"]) == 2
    assert "error" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "polybus_patterns", None)  # as if it were not installed
    assert main(["dlq", "list", "memory://"]) == 2
    assert "needs polybus-patterns" in capsys.readouterr().err


def test_dlq_as_a_process() -> None:
    url = broker_url("redis")
    topic, group = unique_name("cli-proc"), "billing"
    asyncio.run(_dead_letters(url, topic, group, 3))
    command = [sys.executable, "-m", "polybus._cli", "dlq"]
    env = {**os.environ, "NO_COLOR": "1"}
    listed = subprocess.run(
        [*command, "list", url, topic, group], capture_output=True, text=True, env=env, timeout=60
    )
    assert listed.returncode == 0, listed.stderr
    assert f"{topic}/{group}: 3" in listed.stdout
    replayed = subprocess.run(
        [*command, "replay", url, topic, group], capture_output=True, text=True, timeout=60
    )
    assert replayed.returncode == 0 and "replayed 3" in replayed.stdout, replayed.stderr
    purged = subprocess.run(
        [*command, "purge", url, topic, group, "--yes"], capture_output=True, text=True, timeout=60
    )
    assert purged.returncode == 1 and "no dead letters" in purged.stdout
    asyncio.run(_drop(url, topic))
