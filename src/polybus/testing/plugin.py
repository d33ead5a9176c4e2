"""The polybus pytest plugin: runs ``async def`` tests, provides ``polybus_url``, finds brokers.

Enable it with ``-p polybus.testing.plugin`` (or ``pytest_plugins = ["polybus.testing.plugin"]``).

- ``async def`` tests run in a fresh event loop each (``asyncio.run``), bounded by
  ``@pytest.mark.polybus(timeout=...)`` (default 120 s). Fixtures are plain (sync) fixtures.
- ``--polybus-url URL`` (or ``POLYBUS_TEST_URL``) sets the ``polybus_url`` fixture the contract
  suite runs against; the default is ``memory://``. Adapters override the fixture.
- ``polybus_faults`` (a :class:`~polybus.testing.FaultInjector`, default: a ``TcpRelay`` in front
  of ``polybus_url``) is what the contract's resilience cases cut and stop; override it per broker.
- :func:`broker_url` finds a real broker through :mod:`polybus.testing.provision` and skips the
  test when none is found, or fails it when brokers are required (``CI`` set). A broker is found
  or started only when a test asks for it; the terminal summary lists those the run used.
- :func:`note` shows a line (a scaled volume, a throughput) beside a test's result, from a
  pytest-xdist worker too, whose own output pytest never shows.
- Under pytest-xdist (``-n N``) each worker is a process of its own: it finds or starts its own
  brokers (local ones on free ports, stopped when the worker ends); the terminal summary lists
  them with the worker's id, and how long each worker ran.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import time
from typing import Any

import pytest

from polybus.testing import provision
from polybus.testing._faults import FaultInjector, RelayFaults
from polybus.testing.contract import ContractConfig

__all__ = ["broker_url", "note"]

DEFAULT_TIMEOUT = 120.0
NOTE = "polybus-note"
"""The ``user_properties`` key of the lines :func:`note` adds to a test's report."""


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("polybus")
    group.addoption(
        "--polybus-url",
        default=None,
        help="broker URL the polybus contract suite runs against (default: POLYBUS_TEST_URL or memory://)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "polybus(timeout=120): async polybus test settings")
    config.pluginmanager.register(_Reporter(config), "polybus-reporter")


def note(item: pytest.Item, text: str) -> None:
    """Show ``[text]`` in the terminal beside ``item``'s result, when its report arrives.

    Use it rather than a print under ``capsys.disabled()``: what a pytest-xdist worker prints is
    never shown, while a report's ``user_properties`` (where the line goes) reach the terminal.
    """
    item.user_properties.append((NOTE, text))


class _Reporter:
    """The plugin's terminal output: notes, and the summary of the brokers (and workers) used.

    A pytest-xdist worker prints nothing: it hands its brokers and wall time to the controller in
    ``workeroutput``, and its reports (notes included) reach the controller's hooks.
    """

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.worker: dict[str, Any] | None = getattr(config, "workeroutput", None)
        self.started = time.monotonic()
        self.workers: dict[str, dict[str, Any]] = {}
        self.by_broker: dict[str, list[float]] = {}  # broker -> [tests, seconds]

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if self.worker is not None:
            return
        tally = self.by_broker.setdefault(_broker_of(report.nodeid), [0, 0.0])
        tally[1] += report.duration
        if report.when != "teardown":  # the last report of a test carries every note it made
            return
        tally[0] += 1
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        for key, value in report.user_properties:
            if key == NOTE and reporter is not None:
                reporter.write(f"\n[{value}] ")

    def pytest_sessionfinish(self) -> None:
        if self.worker is not None:  # before pytest_unconfigure releases the brokers
            self.worker["polybus"] = {
                "brokers": [line.strip() for line in provision.report_lines()[1:]],
                "seconds": time.monotonic() - self.started,
            }

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: object) -> None:
        """pytest-xdist's controller: a worker ended; keep what it reported."""
        reported = getattr(node, "workeroutput", {}).get("polybus")
        if reported is not None:
            self.workers[str(node.gateway.id)] = reported

    def _by_worker(self) -> list[tuple[str, dict[str, Any]]]:
        return sorted(self.workers.items(), key=lambda item: (len(item[0]), item[0]))  # gw2 < gw10

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        """List the brokers the run used (URL, source, version) or could not get; nothing is
        started here. Under pytest-xdist: each broker once, followed by the ids of the workers
        that used it unless all did (a local broker is a worker's own); then each worker's time."""
        lines = [line.strip() for line in provision.report_lines()[1:]]
        users: dict[str, list[str]] = {}
        for worker, reported in self._by_worker():
            for line in reported["brokers"]:
                users.setdefault(line, []).append(worker)
        for line, workers in sorted(users.items(), key=lambda item: _broker_order(item[0])):
            lines.append(line if len(workers) == len(self.workers) else f"{line} [{', '.join(workers)}]")
        if lines:
            terminalreporter.write_sep("-", "polybus brokers")
            for line in lines:
                terminalreporter.write_line(line)
        if self.workers:
            times = ", ".join(f"{name} {w['seconds']:.0f}s" for name, w in self._by_worker())
            terminalreporter.write_line(f"pytest-xdist workers' wall time: {times}")
            tallies = sorted(self.by_broker.items(), key=lambda item: -item[1][1])
            spent = ", ".join(f"{name} {seconds:.0f}s ({tests:.0f})" for name, (tests, seconds) in tallies)
            terminalreporter.write_line(f"test time by broker (tests), summed over the workers: {spent}")


def pytest_unconfigure(config: pytest.Config) -> None:
    provision.release_all()


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    func = pyfuncitem.obj
    if not inspect.iscoroutinefunction(func):
        return None
    marker = pyfuncitem.get_closest_marker("polybus")
    timeout = float(marker.kwargs.get("timeout", DEFAULT_TIMEOUT)) if marker else DEFAULT_TIMEOUT
    kwargs = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}

    async def run() -> Any:
        try:
            async with asyncio.timeout(timeout):
                return await func(**kwargs)
        except TimeoutError:
            pytest.fail(f"test did not finish within {timeout:.0f}s", pytrace=False)

    asyncio.run(run())
    return True


def _broker_of(nodeid: str) -> str:
    """The broker a test ran on, from its path (``adapters/kafka/``) or its parameters (``[sqs-redis]``:
    the first broker named), else ``other``."""
    path, _, params = nodeid.partition("[")
    for part in path.split("/")[:2] + params.rstrip("]").split("-"):
        if part in provision.BROKERS or part == "memory":
            return part
    return "other"


def _broker_order(line: str) -> int:
    name = line.partition(":")[0]
    return provision.BROKERS.index(name) if name in provision.BROKERS else len(provision.BROKERS)


def broker_url(name: str) -> str:
    """URL of a real ``name`` broker (rabbitmq, kafka, sqs, nats, redis), found or started.

    Skips the calling test when none can be had, or fails it when brokers are required.
    """
    try:
        return provision.acquire(name).url
    except provision.BrokerUnavailable as exc:
        if provision.required(name):
            pytest.fail(f"{name} broker required (CI or POLYBUS_REQUIRE_BROKERS) but unavailable: {exc}")
        pytest.skip(f"no {name} broker: {exc}")


@pytest.fixture(scope="session")
def polybus_url(request: pytest.FixtureRequest) -> str:
    """The broker URL the contract suite runs against."""
    url: str | None = request.config.getoption("--polybus-url")
    return url or os.environ.get("POLYBUS_TEST_URL") or "memory://"


@pytest.fixture
def polybus_contract_config(polybus_url: str) -> ContractConfig:
    """Knobs of the contract suite; override in a conftest.py to scale it down for a slow broker."""
    # memory:// lives in this process: a second process cannot reach it
    return ContractConfig(other_processes=not polybus_url.startswith("memory:"))


@pytest.fixture
def polybus_faults(polybus_url: str) -> FaultInjector | None:
    """What the contract's resilience cases break: a :class:`~polybus.testing.RelayFaults` in front
    of ``polybus_url``'s host and port, or ``None`` (those cases skip) when the URL has none.

    Override it where a relay does not fit (a Kafka cluster advertises its own addresses) or
    return ``None`` to skip the cases.
    """
    return RelayFaults.in_front_of(polybus_url)
