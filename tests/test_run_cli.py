"""``polybus run`` in one process: finding the App, errors before anything connects, graceful stop on
SIGTERM (in-process on memory://), and the second SIGINT that exits at once (a subprocess on Redis:
memory:// cannot be reached from another process to put a handler in flight)."""

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import polybus
from polybus._run import load_app, serve
from polybus.testing import unique_name
from polybus.testing.plugin import broker_url

CANARY = "Canary-Pw-77d0"
UNREACHABLE = f"redis://user:{CANARY}@127.0.0.1:1/0"


def write(path: Path, text: str) -> Path:
    path.write_text(text.lstrip("\n"), encoding="utf-8")
    return path


def polybus_run(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("POLYBUS_")}
    return subprocess.run(
        [sys.executable, "-m", "polybus", "run", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env={**clean, **(env or {})},
    )


SERVICE = """
import polybus

app = polybus.App()

@app.subscribe("jobs", group="workers")
async def work(delivery: polybus.Delivery) -> None:
    pass

def make_app() -> polybus.App:
    return app

not_an_app = 42
"""


@pytest.mark.parametrize("target", ["svc:app", "svc", "svc:make_app", "svc.py:app", "./svc.py:make_app"])
def test_load_app_by_module_or_file_and_attribute_or_factory(
    target: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "svc.py", SERVICE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "svc", raising=False)
    app = load_app(target)
    assert isinstance(app, polybus.App)
    assert len(app.subscriptions) == 1


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("svc:missing", "'svc' has no attribute 'missing'"),
        ("svc:not_an_app", "is int, not a polybus.App"),
        ("no_such_module_4d1:app", "cannot import 'no_such_module_4d1': ModuleNotFoundError"),
        ("nowhere/svc.py:app", "no such file"),
        (":app", "no module"),
    ],
)
def test_load_app_errors_are_configuration_errors(
    target: str, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "svc.py", SERVICE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "svc", raising=False)
    with pytest.raises(polybus.ConfigurationError) as info:
        load_app(target)
    assert message in str(info.value)


def test_a_typo_in_the_file_is_reported_before_connecting(tmp_path: Path) -> None:
    write(tmp_path / "svc.py", SERVICE)
    write(tmp_path / "polybus.toml", '[topics]\njobs = "prod-jobs"\n\n[subscriptions.work]\nconcurency = 4\n')
    # the broker is unreachable: a connection attempt would fail differently, and later
    result = polybus_run("svc:app", cwd=tmp_path, env={"POLYBUS_URL": UNREACHABLE})
    assert result.returncode == 2
    assert "polybus.toml:5: unknown key 'subscriptions.work.concurency'" in result.stderr
    assert CANARY not in result.stderr + result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["svc:app", "--processes", "2", "--url", "memory://"], "memory:// lives in one process"),
        (["svc:app", "--grace-period", "-1", "--url", "memory://"], "grace_period"),
        (["svc:app"], "no broker URL"),
        (["svc:nothing", "--url", UNREACHABLE], "has no attribute 'nothing'"),
        (["svc:nothing", "--url", UNREACHABLE, "--processes", "2"], "has no attribute 'nothing'"),
        (["svc:app", "--config", "absent.toml"], "config file 'absent.toml' not found"),
    ],
)
def test_command_line_errors_exit_2_and_hide_passwords(args: list[str], message: str, tmp_path: Path) -> None:
    write(tmp_path / "svc.py", SERVICE)
    result = polybus_run(*args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert CANARY not in result.stderr + result.stdout


def until(condition: Callable[[], bool], timeout: float = 20.0) -> asyncio.Task[None]:
    async def wait() -> None:
        while not condition():  # noqa: ASYNC110 - state of another process or of the service: polled
            await asyncio.sleep(0.01)

    return asyncio.ensure_future(asyncio.wait_for(wait(), timeout))


async def _in_flight_then_sigterm(grace_period: float) -> tuple[int, list[str], polybus.Broker, str]:
    """8 handlers of 0.5 s in flight in ``serve()`` on memory://, then a SIGTERM to this process."""
    url = f"memory://{unique_name('run')}"
    physical = unique_name("jobs")
    app = polybus.App()
    started: list[str] = []
    finished: list[str] = []

    @app.subscribe("jobs", group="workers", concurrency=8, prefetch=8)
    async def work(delivery: polybus.Delivery) -> None:
        started.append(delivery.id)
        await asyncio.sleep(0.5)
        finished.append(delivery.id)

    broker = polybus.connect(url)
    await broker.open()
    topic = broker.topic(physical)
    async with topic.consumer("workers"):  # the group exists before the send
        pass
    async with topic.producer() as producer:
        await producer.send_many([f"job {i}".encode() for i in range(8)])
    settings = polybus.ServiceSettings(url=url, grace_period=grace_period, topics={"jobs": physical})
    service = asyncio.create_task(serve(app, settings))
    await until(lambda: len(started) == 8)
    os.kill(os.getpid(), signal.SIGTERM)
    code = await asyncio.wait_for(service, grace_period + 5)
    assert sorted(started) == sorted(set(started))
    return code, finished, broker, physical


async def test_sigterm_lets_running_handlers_finish_and_acks_them() -> None:
    code, finished, broker, physical = await _in_flight_then_sigterm(grace_period=5)
    assert code == 0
    assert len(finished) == 8
    async with broker, broker.topic(physical).consumer("workers") as fresh:
        assert await fresh.receive(timeout=0.5) is None  # all 8 were acked


async def test_handlers_cut_off_by_the_grace_period_are_never_acked() -> None:
    code, finished, broker, physical = await _in_flight_then_sigterm(grace_period=0.1)
    assert code == 0
    assert finished == []
    async with broker, broker.topic(physical).consumer("workers") as fresh:
        redelivered = [await fresh.receive(timeout=5) for _ in range(8)]
        assert all(d is not None and d.attempt == 2 for d in redelivered)


async def test_a_stop_signal_while_importing_stops_before_connecting() -> None:
    settings = polybus.ServiceSettings(url=UNREACHABLE)
    assert await serve(polybus.App(), settings, received=[signal.SIGTERM]) == 0


SLEEPER = """
import asyncio, pathlib, polybus

app = polybus.App()

@app.subscribe("{topic}", group="sleepers")
async def sleep(delivery: polybus.Delivery) -> None:
    pathlib.Path("in-flight").write_text("yes")
    await asyncio.sleep(60)
"""


async def test_a_second_sigint_exits_at_once(tmp_path: Path) -> None:
    url = broker_url("redis")
    topic = unique_name("sleep")
    write(tmp_path / "sleeper.py", SLEEPER.replace("{topic}", topic))
    async with polybus.connect(url) as broker:
        async with broker.topic(topic).consumer("sleepers"):
            pass
        async with broker.topic(topic).producer() as producer:
            await producer.send(b"zzz")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("POLYBUS_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "polybus", "run", "sleeper:app", "--grace-period", "30",
        cwd=tmp_path, env={**clean, "POLYBUS_URL": url}, stderr=subprocess.PIPE,
    )  # fmt: skip
    await until(lambda: (tmp_path / "in-flight").exists(), 30)
    process.send_signal(signal.SIGINT)
    await asyncio.sleep(0.3)
    assert process.returncode is None  # the first one waits for the handler (up to 30 s)
    sent = time.monotonic()
    process.send_signal(signal.SIGINT)
    assert await asyncio.wait_for(process.wait(), 10) == 130
    assert time.monotonic() - sent < 5
    assert process.stderr is not None
    text = (await process.stderr.read()).decode()
    assert "SIGINT: stopping; running handlers have 30.0s to finish" in text
    assert "second SIGINT: exiting now" in text
