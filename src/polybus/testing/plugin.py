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
"""

from __future__ import annotations

import asyncio
import inspect
import os
from typing import Any

import pytest

from polybus.testing import provision
from polybus.testing._faults import FaultInjector, RelayFaults
from polybus.testing.contract import ContractConfig

__all__ = ["broker_url"]

DEFAULT_TIMEOUT = 120.0


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("polybus")
    group.addoption(
        "--polybus-url",
        default=None,
        help="broker URL the polybus contract suite runs against (default: POLYBUS_TEST_URL or memory://)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "polybus(timeout=120): async polybus test settings")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """List the brokers the run used (URL, source, version) or could not get; nothing is started here."""
    lines = provision.report_lines()
    if lines:
        terminalreporter.write_sep("-", lines[0].rstrip(":"))
        for line in lines[1:]:
            terminalreporter.write_line(line.strip())


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
