"""Broker provisioning: real discovery of the five brokers, handshakes, the choice logic, the CLI,
and "a missing broker skips locally and fails under CI" (through pytester)."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from polybus.testing import _provision_local, _provision_state, provision
from polybus.testing._containers import container_spec
from polybus.testing._provision_probe import ProbeFailed, kafka_bootstrap, probe, sqs_endpoint
from polybus.testing.provision import BrokerUnavailable, Hooks, discover, required

# -- real brokers --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["rabbitmq", "redis", "nats"])
def test_service_on_standard_port_is_found_by_handshake(name: str) -> None:
    try:
        found, stop = discover(name, {}, Hooks(), sources=("port",))
    except BrokerUnavailable as exc:
        if "is older than" in str(exc):  # answered the handshake, but passed over as too old
            version = probe(name, provision.STANDARD_URLS[name])
            assert provision._older_than_supported(name, version) is not None
            return
        if required(name):
            raise
        pytest.skip(f"no {name} service on its standard port here: {exc}")
    assert found.source == "port"
    assert stop is None  # not ours to stop
    assert found.url == provision.STANDARD_URLS[name]
    assert found.version and any(ch.isdigit() for ch in found.version)


@pytest.mark.parametrize("name", ["kafka", "sqs", "redis", "nats"])
def test_local_process_is_started_answers_and_is_stopped(name: str) -> None:
    found, stop = discover(name, {}, Hooks(), sources=("local",))
    assert found.source == "local"
    assert stop is not None
    port = int(found.url.split("127.0.0.1:", 1)[1].split("/")[0].split("?")[0])
    assert probe(name, found.url)  # a second, independent handshake
    stop()
    with pytest.raises(ProbeFailed):
        probe(name, found.url, timeout=2.0)
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0, "the port still accepts connections"


def test_rabbitmq_server_is_started_as_its_own_node() -> None:
    try:
        found, stop = discover("rabbitmq", {}, Hooks(), sources=("local",))
    except BrokerUnavailable as exc:
        if "not found" in str(exc) and not required("rabbitmq"):
            pytest.skip(str(exc))
        raise
    assert stop is not None
    try:
        assert found.url != provision.STANDARD_URLS["rabbitmq"]
        assert "RabbitMQ" in (found.version or "")
    finally:
        stop()
    with pytest.raises(ProbeFailed):
        probe("rabbitmq", found.url, timeout=2.0)


def test_acquire_caches_per_process() -> None:
    first = provision.acquire("redis")
    assert provision.acquire("redis") is first
    with pytest.raises(ValueError, match="unknown broker kind"):
        provision.acquire("mqseries")


# -- handshakes reject what is not the broker -----------------------------------------------------


@pytest.fixture
def impostor() -> Iterator[int]:
    """A TCP server that accepts connections and answers every one with a line of nonsense."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    server.settimeout(0.2)
    done = threading.Event()

    def serve() -> None:
        while not done.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            with conn:
                try:
                    conn.sendall(b"220 impostor ESMTP ready, not a message broker\r\n")
                    conn.settimeout(0.5)
                    conn.recv(4096)
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    done.set()
    thread.join(2)
    server.close()


@pytest.mark.parametrize("name", provision.BROKERS)
def test_open_port_speaking_another_protocol_is_rejected(name: str, impostor: int) -> None:
    url = provision.STANDARD_URLS[name].replace(f":{_standard_port(name)}", f":{impostor}")
    assert f":{impostor}" in url
    with pytest.raises(ProbeFailed):
        probe(name, url, timeout=2.0)


def test_a_real_broker_of_another_kind_is_rejected() -> None:
    try:
        probe("nats", provision.STANDARD_URLS["nats"], timeout=2.0)
        probe("redis", provision.STANDARD_URLS["redis"], timeout=2.0)
    except ProbeFailed as exc:
        pytest.skip(f"needs the nats and redis services: {exc}")
    with pytest.raises(ProbeFailed):
        probe("redis", "redis://127.0.0.1:4222/0", timeout=2.0)
    with pytest.raises(ProbeFailed):
        probe("kafka", "kafka://127.0.0.1:6379", timeout=2.0)


def test_servers_older_than_supported_are_passed_over_for_a_local_one() -> None:
    hooks = Hooks(probe=lambda name, url: "nats-server 2.9.10 (JetStream)")
    with pytest.raises(BrokerUnavailable, match=r"2\.9\.10 \(JetStream\) is older than 2\.10"):
        discover("nats", {}, hooks, sources=("port",))
    newer = Hooks(probe=lambda name, url: "nats-server 2.15.1 (JetStream)")
    assert discover("nats", {}, newer, sources=("port",))[0].source == "port"
    redis = Hooks(probe=lambda name, url: "Redis 7.0.15")
    assert discover("redis", {}, redis, sources=("port",))[0].source == "port"


def _standard_port(name: str) -> int:
    return {"rabbitmq": 5672, "kafka": 9092, "sqs": 4566, "nats": 4222, "redis": 6379}[name]


def test_url_conversions() -> None:
    assert kafka_bootstrap("kafka://a:1,b") == "a:1,b:9092"
    args = sqs_endpoint("sqs://AK:S%2Fk@127.0.0.1:4566?region=eu-west-1&tls=false")
    assert args == {
        "region_name": "eu-west-1",
        "endpoint_url": "http://127.0.0.1:4566",
        "aws_access_key_id": "AK",
        "aws_secret_access_key": "S/k",
    }
    assert sqs_endpoint("sqs://h:1")["endpoint_url"] == "https://h:1"


# -- the choice logic, with fakes of provisioning's own operations -------------------------------


class Calls:
    """Fakes for :class:`Hooks` that record which operations discovery used."""

    def __init__(
        self,
        *,
        answering: set[str] = frozenset(),
        recorded: Any = None,  # type: ignore[assignment]
        local: Any = None,
        docker: bool = False,
        container: Any = None,
    ) -> None:
        self.log: list[str] = []
        self.answering = answering
        self._recorded, self._local, self._docker, self._container = recorded, local, docker, container

    def hooks(self) -> Hooks:
        return Hooks(
            probe=self.probe,
            recorded=self.recorded,
            start_local=self.start_local,
            stop_local=lambda broker: self.log.append(f"stop {broker.url}"),
            docker_answers=self.docker_answers,
            start_container=self.start_container,
        )

    def probe(self, name: str, url: str) -> str:
        self.log.append(f"probe {url}")
        if url in self.answering:
            return "v1"
        raise ProbeFailed(f"{url} is silent")

    def recorded(self, name: str) -> Any:
        self.log.append("recorded")
        return self._recorded

    def start_local(self, name: str) -> Any:
        self.log.append("start_local")
        if self._local is None:
            raise _provision_local.NotStartable("program not found")
        return self._local

    def docker_answers(self) -> bool:
        self.log.append("docker?")
        return self._docker

    def start_container(self, name: str) -> Any:
        self.log.append("start_container")
        if self._container is None:
            raise RuntimeError("image pull failed")
        return self._container


STANDARD = provision.STANDARD_URLS["redis"]
LOCAL = SimpleNamespace(url="redis://127.0.0.1:40001/0", pid=7, program="redis-server", version="v2")


def test_env_url_wins_and_nothing_else_is_tried() -> None:
    calls = Calls(answering={"redis://env:1/0", STANDARD}, local=LOCAL, docker=True)
    found, stop = discover("redis", {"POLYBUS_REDIS_URL": "redis://env:1/0"}, calls.hooks())
    assert (found.source, found.url, found.detail) == ("env", "redis://env:1/0", "POLYBUS_REDIS_URL")
    assert stop is None
    assert calls.log == ["probe redis://env:1/0"]


def test_dead_env_url_is_an_error_not_a_reason_to_start_something() -> None:
    calls = Calls(answering={STANDARD}, local=LOCAL)
    with pytest.raises(BrokerUnavailable, match=r"POLYBUS_REDIS_URL=redis://:\*\*\*@env:1/0 did not answer"):
        discover("redis", {"POLYBUS_REDIS_URL": "redis://:hunter2@env:1/0"}, calls.hooks())
    assert calls.log == ["probe redis://:hunter2@env:1/0"]


def test_standard_port_comes_before_starting_anything() -> None:
    calls = Calls(answering={STANDARD}, local=LOCAL)
    found, stop = discover("redis", {}, calls.hooks())
    assert (found.source, found.url, stop) == ("port", STANDARD, None)
    assert calls.log == [f"probe {STANDARD}"]


def test_a_broker_left_by_brokers_up_is_reused() -> None:
    earlier = SimpleNamespace(url="redis://127.0.0.1:40002/0", pid=9, version="")
    calls = Calls(answering={earlier.url}, recorded=earlier, local=LOCAL)
    found, stop = discover("redis", {}, calls.hooks())
    assert (found.source, found.url, found.detail, stop) == ("up", earlier.url, "pid 9", None)
    assert "start_local" not in calls.log


def test_local_process_is_started_and_stopped_through_the_returned_function() -> None:
    calls = Calls(local=LOCAL, docker=True)
    found, stop = discover("redis", {}, calls.hooks())
    assert (found.source, found.url, found.version) == ("local", LOCAL.url, "v2")
    assert calls.log[-1] == "start_local" and "docker?" not in calls.log
    assert stop is not None
    stop()
    assert calls.log[-1] == f"stop {LOCAL.url}"


def test_container_is_not_tried_when_docker_does_not_answer() -> None:
    calls = Calls(docker=False, container=SimpleNamespace(url="x", image="i", version="v", stop=lambda: None))
    with pytest.raises(BrokerUnavailable) as caught:
        discover("redis", {}, calls.hooks())
    assert "start_container" not in calls.log
    message = str(caught.value)
    for part in ("POLYBUS_REDIS_URL not set", "is silent", "program not found", "no Docker engine answered"):
        assert part in message


def test_container_is_chosen_when_docker_answers_and_nothing_else_works() -> None:
    stopped: list[bool] = []
    running = SimpleNamespace(
        url="redis://dockerhost:1/0", image="redis:7", version="v3", stop=lambda: stopped.append(True)
    )
    calls = Calls(docker=True, container=running)
    found, stop = discover("redis", {}, calls.hooks())
    assert (found.source, found.url, found.detail) == ("container", running.url, "redis:7")
    assert calls.log[-2:] == ["docker?", "start_container"]
    assert stop is not None
    stop()
    assert stopped == [True]


def test_a_failing_container_is_reported() -> None:
    calls = Calls(docker=True)
    with pytest.raises(BrokerUnavailable, match="container: RuntimeError: image pull failed"):
        discover("redis", {}, calls.hooks())


def test_polybus_provision_limits_the_sources() -> None:
    calls = Calls(local=LOCAL, docker=True)
    with pytest.raises(BrokerUnavailable, match="POLYBUS_PROVISION excludes up, local, container"):
        discover("redis", {"POLYBUS_PROVISION": "env, port"}, calls.hooks())
    assert calls.log == [f"probe {STANDARD}"]
    with pytest.raises(BrokerUnavailable, match="unknown source"):
        discover("redis", {"POLYBUS_PROVISION": "env,cloud"}, calls.hooks())
    with pytest.raises(ValueError, match="unknown broker kind"):
        discover("mqseries", {}, calls.hooks())


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, False),
        ({"CI": ""}, False),
        ({"CI": "0"}, False),
        ({"CI": "false"}, False),
        ({"CI": "true"}, True),
        ({"CI": "1"}, True),
        ({"POLYBUS_REQUIRE_BROKERS": "all"}, True),
        ({"POLYBUS_REQUIRE_BROKERS": "kafka, redis"}, True),
        ({"POLYBUS_REQUIRE_BROKERS": "kafka,sqs"}, False),
    ],
)
def test_required(env: dict[str, str], expected: bool) -> None:
    assert required("redis", env) is expected


def test_container_specs() -> None:
    kafka = container_spec("kafka", "dockerhost", 40123)
    assert kafka.url == "kafka://dockerhost:40123"
    assert kafka.env["KAFKA_ADVERTISED_LISTENERS"] == "PLAINTEXT://dockerhost:40123"
    assert container_spec("nats", "h", 1).command == "-js"
    assert container_spec("sqs", "h", 2).url == "sqs://test:test@h:2?region=us-east-1&tls=false"
    assert {container_spec(n, "h", 3).port for n in provision.BROKERS} == {5672, 9092, 4566, 4222, 6379}


def test_container_image_can_be_overridden(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POLYBUS_REDIS_IMAGE", "valkey/valkey:8")
    assert container_spec("redis", "h", 1).image == "valkey/valkey:8"


# -- the command line ----------------------------------------------------------------------------


def test_cli_status_shows_url_source_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert provision.cli(["status", "redis"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("redis: redis://")
    assert "Redis" in out or "not running" in out
    assert provision.cli(["status", "mqseries"]) == 2


def test_cli_up_records_and_down_stops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("POLYBUS_STATE_DIR", str(tmp_path))
    monkeypatch.delenv("POLYBUS_KAFKA_URL", raising=False)
    assert provision.cli(["up", "kafka"]) == 0
    out = capsys.readouterr().out
    started = _provision_state.recorded("kafka")
    if started is None:
        assert "(port" in out
        pytest.skip("a Kafka broker listens on 9092 here: `up` had nothing to start")
    try:
        assert f"export POLYBUS_KAFKA_URL={started.url}" in out
        assert probe("kafka", started.url)
        assert provision.cli(["status", "kafka"]) == 0
        assert "(up: pid" in capsys.readouterr().out
    finally:
        assert provision.cli(["down", "kafka"]) == 0
    assert not _provision_local.alive(started.pid, started.program)
    assert _provision_state.load() == {}
    assert "stopped" in capsys.readouterr().out


# -- skipped locally, failed under CI --------------------------------------------------------------

NEEDS_REDIS = """
from polybus.testing.plugin import broker_url

def test_needs_redis():
    broker_url("redis")
"""


@pytest.fixture
def dead_redis_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("POLYBUS_") or key == "CI":
            monkeypatch.delenv(key)
    monkeypatch.setenv("POLYBUS_REDIS_URL", f"redis://127.0.0.1:{_provision_local.free_port()}/0")
    monkeypatch.setenv("POLYBUS_PROVISION", "env")  # nothing else is tried: the outcome is certain


def test_missing_broker_skips_locally(pytester: pytest.Pytester, dead_redis_env: None) -> None:
    pytester.makepyfile(test_needs=NEEDS_REDIS)
    result = pytester.runpytest_subprocess("-p", "polybus.testing.plugin", "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*polybus brokers*", "redis: unavailable (tests skipped)*did not answer*"])
    result.stdout.fnmatch_lines(["*SKIPPED*no redis broker: POLYBUS_REDIS_URL=*did not answer*"])


def test_missing_broker_fails_under_ci(
    pytester: pytest.Pytester, dead_redis_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CI", "1")
    pytester.makepyfile(test_needs=NEEDS_REDIS)
    result = pytester.runpytest_subprocess("-p", "polybus.testing.plugin")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*polybus brokers*", "redis: unavailable (REQUIRED, tests failed)*"])
    result.stdout.fnmatch_lines(["*redis broker required (CI or POLYBUS_REQUIRE_BROKERS) but unavailable*"])


# -- a broker is started only when a test asks for it --------------------------------------------

RECORD_DISCOVERY = """
import os

from polybus.testing import provision

def _discover(name, env, hooks, sources=None):
    with open(os.environ["DISCOVERY_LOG"], "a") as log:
        log.write(name + "\\n")
    raise provision.BrokerUnavailable("discovery is recorded, not done, in this test")

provision.discover = _discover
"""

ONE_MEMORY_CASE = """
from polybus.testing.contract import BrokerContract

class TestMemory(BrokerContract):
    pass
"""


def test_a_memory_run_starts_no_broker(
    pytester: pytest.Pytester, dead_redis_env: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A run that asks for no broker finds and starts none, and its summary lists none."""
    log = tmp_path / "discovered"
    monkeypatch.setenv("DISCOVERY_LOG", str(log))
    pytester.makeconftest(RECORD_DISCOVERY)
    pytester.makepyfile(test_memory=ONE_MEMORY_CASE, test_needs=NEEDS_REDIS)
    result = pytester.runpytest_subprocess(
        "-p", "polybus.testing.plugin", "test_memory.py", "-k", "roundtrip", "--polybus-url=memory://"
    )
    result.assert_outcomes(passed=1)
    assert not log.exists(), f"a memory run looked for brokers: {log.read_text().split()}"
    assert "polybus brokers" not in result.stdout.str()
    # the same plugin does look when a test asks (the recorder above works), and says so at the end
    result = pytester.runpytest_subprocess("-p", "polybus.testing.plugin", "test_needs.py", "-rs")
    result.assert_outcomes(skipped=1)
    assert log.read_text().split() == ["redis"]
    result.stdout.fnmatch_lines(["*polybus brokers*", "redis: unavailable (tests skipped)*recorded*"])
