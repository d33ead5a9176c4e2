"""``polybus brokers``: show which brokers are reachable, start local ones, stop them again.

    polybus brokers [status] [KIND...]   what is found (URL, source, version); starts nothing
    polybus brokers up [KIND...]         start the missing ones as detached local processes
    polybus brokers down [KIND...]       stop what ``up`` started

``up`` records its processes (see :mod:`polybus.testing._provision_state`) so tests, examples and
benchmarks reuse them, and prints ``export POLYBUS_<KIND>_URL=...`` lines. Never imports pytest.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
from collections.abc import Sequence

from polybus.testing import _provision_local, _provision_state
from polybus.testing.provision import BROKERS, BrokerUnavailable, Hooks, discover

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="polybus brokers", description="Find, start or stop test brokers.")
    parser.add_argument("action", nargs="?", default="status", choices=["status", "up", "down"])
    kinds = f"any of {', '.join(BROKERS)} (default: all)"
    parser.add_argument("kinds", nargs="*", metavar="KIND", help=kinds)
    return parser


def main(args: Sequence[str]) -> int:
    """Run the command; returns the exit status (1 when ``up`` could not provide a broker)."""
    options = _parser().parse_args(list(args))
    kinds = options.kinds or list(BROKERS)
    unknown = [k for k in kinds if k not in BROKERS]
    if unknown:
        print(f"unknown broker kind(s): {', '.join(unknown)}; known: {', '.join(BROKERS)}")
        return 2
    if options.action == "down":
        return _down(kinds)
    if options.action == "up":
        return _up(kinds)
    return _status(kinds)


def _status(kinds: list[str]) -> int:
    for name in kinds:
        try:
            found, _ = discover(name, os.environ, Hooks(), sources=("env", "port", "up"))
        except BrokerUnavailable as exc:
            print(f"{name}: not running ({exc}); `polybus brokers up {name}` would start one")
        else:
            print(found.describe())
    return 0


def _up(kinds: list[str]) -> int:
    status = 0
    exports: list[str] = []
    for name in kinds:
        try:
            hooks = Hooks(start_local=_start_detached)
            found, _ = discover(name, os.environ, hooks, sources=("env", "port", "up", "local"))
        except BrokerUnavailable as exc:
            print(f"{name}: could not be had: {exc}")
            status = 1
            continue
        print(found.describe())
        if found.source != "env":  # an env URL is already exported, and may carry a real password
            exports.append(f"export POLYBUS_{name.upper()}_URL={shlex.quote(found.url)}")
    if exports:
        print()
        print("\n".join(exports))
    return status


def _start_detached(name: str) -> _provision_local.LocalBroker:
    workdir = _provision_state.state_dir() / name
    shutil.rmtree(workdir, ignore_errors=True)  # a fresh broker starts with no data of an old one
    broker = _provision_local.start(name, workdir=workdir, detached=True)
    _provision_state.record(broker)
    return broker


def _down(kinds: list[str]) -> int:
    entries = _provision_state.load()
    for name in kinds:
        broker = entries.get(name)
        if broker is None:
            print(f"{name}: nothing started by `polybus brokers up`")
            continue
        if _provision_local.alive(broker.pid, broker.program):
            _provision_local.stop(broker)
            print(f"{name}: stopped {broker.program} (pid {broker.pid})")
        else:
            print(f"{name}: {broker.program} (pid {broker.pid}) was no longer running")
            _provision_local.stop(broker)  # removes its working directory
        _provision_state.forget(name)
    return 0
