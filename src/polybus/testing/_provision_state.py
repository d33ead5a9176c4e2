"""The record of brokers started by ``polybus brokers up``, so later processes can reuse and stop them.

One JSON file, ``brokers.json``, in ``POLYBUS_STATE_DIR`` (default: ``$XDG_CACHE_HOME/polybus``,
i.e. ``~/.cache/polybus``), mapping a broker kind to the process that serves it. Each broker's
working directory (data and ``broker.log``) lives beside it. Writes are atomic (write, then
rename). Never imports pytest.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from polybus.testing._provision_local import LocalBroker, alive

__all__ = ["forget", "load", "record", "recorded", "state_dir"]


def state_dir() -> Path:
    """Where ``brokers.json`` and the detached brokers' working directories live."""
    explicit = os.environ.get("POLYBUS_STATE_DIR")
    if explicit:
        return Path(explicit)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "polybus"


def _file() -> Path:
    return state_dir() / "brokers.json"


def load() -> dict[str, LocalBroker]:
    """Every recorded broker (alive or not), by kind; an unreadable file counts as empty."""
    try:
        raw: dict[str, Any] = json.loads(_file().read_text())
    except (OSError, ValueError):
        return {}
    entries: dict[str, LocalBroker] = {}
    for name, entry in raw.items():
        try:
            entries[name] = LocalBroker(
                name, entry["url"], int(entry["pid"]), list(entry["argv"]), entry["workdir"], entry["version"]
            )
        except (KeyError, TypeError, ValueError):
            continue
    return entries


def _save(entries: dict[str, LocalBroker]) -> None:
    folder = state_dir()
    folder.mkdir(parents=True, exist_ok=True)
    data = {
        name: {"url": b.url, "pid": b.pid, "argv": b.argv, "workdir": b.workdir, "version": b.version}
        for name, b in entries.items()
    }
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".brokers-", suffix=".json")
    with os.fdopen(fd, "w") as out:
        json.dump(data, out, indent=2)
    os.replace(tmp, _file())


def record(broker: LocalBroker) -> None:
    """Remember a detached broker (replacing any earlier record of that kind)."""
    entries = load()
    entries[broker.name] = broker
    _save(entries)


def forget(name: str) -> None:
    """Drop the record of ``name``'s broker."""
    entries = load()
    if entries.pop(name, None) is not None:
        _save(entries)


def recorded(name: str) -> LocalBroker | None:
    """The recorded ``name`` broker if its process still runs, else ``None``."""
    broker = load().get(name)
    if broker is None or not alive(broker.pid, broker.program):
        return None
    return broker
