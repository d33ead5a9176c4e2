"""``polybus run`` in one process: find the App, connect, run it, stop gracefully on a signal.

The first SIGTERM or SIGINT sets the App's stop event: fetching stops, running handlers get the
grace period to finish, what finished is acked, the rest goes back to its group unacked; then the
process exits 0. A second signal exits at once with 130, closing nothing (what the process held
comes back to the group as after a crash). A worker started by the supervisor (``supervised``)
also stops gracefully when its stdin reaches end of file: the supervisor is gone.

Exit codes: 0 stopped gracefully, 1 the service failed, 2 a configuration error, 130 a second
signal. Imports core modules only.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from polybus._app import App
from polybus._errors import ConfigurationError, PolybusError
from polybus._registry import connect
from polybus._service_settings import ServiceSettings

__all__ = ["EXIT_CONFIG", "EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "load_app", "serve", "setup_logging"]

log = logging.getLogger("polybus.run")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2
EXIT_INTERRUPTED = 130

STOP_SIGNALS: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)


def setup_logging(role: str, level: int = logging.INFO) -> None:
    """Log lines to stderr, each naming the process's role (``worker 2``, ``supervisor``) and pid."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter(f"%(asctime)s polybus[{role} pid %(process)d] %(levelname)s %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def load_app(target: str) -> App:
    """The App named by ``target``: ``module:attr`` or ``path/to/file.py:attr`` (``attr`` defaults to
    ``app``); ``attr`` is an App or a callable without arguments that returns one (a factory)."""
    where, _, attr = target.partition(":")
    attr = attr or "app"
    if not where:
        raise ConfigurationError(f"no module in {target!r}: expected module:app or path/to/file.py:app")
    try:
        module = _import(where)
    except ConfigurationError:
        raise
    except Exception as exc:
        raise ConfigurationError(f"cannot import {where!r}: {type(exc).__name__}: {exc}") from exc
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigurationError(f"{where!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not isinstance(obj, App) and callable(obj):
        obj = obj()
    if not isinstance(obj, App):
        raise ConfigurationError(
            f"{target!r} is {type(obj).__name__}, not a polybus.App (or a factory of one)"
        )
    return obj


def _import(where: str) -> Any:
    if where.endswith(".py") or os.sep in where:
        path = Path(where).resolve()
        if not path.is_file():
            raise ConfigurationError(f"no such file: {where!r}")
        sys.path.insert(0, str(path.parent))  # so the file can import its neighbours
        spec = importlib.util.spec_from_file_location(path.stem, path)
        if spec is None or spec.loader is None:
            raise ConfigurationError(f"cannot import {where!r}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = module
        spec.loader.exec_module(module)
        return module
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # as ``python -m`` does: modules of the working directory
    return importlib.import_module(where)


def _exit_now(signum: int) -> None:
    log.warning(
        "second %s: exiting now; unfinished messages return to their groups as after a crash",
        signal.Signals(signum).name,
    )
    for handler in logging.getLogger().handlers:
        handler.flush()
    os._exit(EXIT_INTERRUPTED)


async def serve(
    app: App, settings: ServiceSettings, *, supervised: bool = False, received: list[int] | None = None
) -> int:
    """Run ``app`` on the broker of ``settings`` until a stop signal; the process's exit code.

    ``received``: stop signals that arrived before the event loop ran (the service then stops at once).
    """
    url = settings.url_value()
    if url is None:
        raise ConfigurationError("no broker URL: pass --url, set POLYBUS_URL, or put url in polybus.toml")
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_signal(signum: int) -> None:
        if stop.is_set():
            _exit_now(signum)
        log.info(
            "%s: stopping; running handlers have %ss to finish",
            signal.Signals(signum).name,
            settings.grace_period,
        )
        stop.set()

    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, on_signal, signum)
    for early in received or ():
        on_signal(early)
    watch = None
    if supervised:
        watch, _ = await loop.connect_read_pipe(lambda: _SupervisorWatch(stop), sys.stdin)
    try:
        if stop.is_set():
            return EXIT_OK
        async with connect(url) as broker:
            log.info(
                "serving %d subscription(s) on %s%s",
                len(app.subscriptions),
                broker.display_url,
                f" (config {settings.config_file})" if settings.config_file else "",
            )
            await app.run(broker, stop=stop, **settings.run_options())
    finally:
        for signum in STOP_SIGNALS:
            loop.remove_signal_handler(signum)
        if watch is not None:
            stop.set()  # the service is over: closing the pipe is not the supervisor going away
            watch.close()
    log.info("stopped")
    return EXIT_OK


class _SupervisorWatch(asyncio.Protocol):
    """Reads the worker's stdin, a pipe from the supervisor: its end of file means the supervisor is gone."""

    def __init__(self, stop: asyncio.Event) -> None:
        self.stop = stop

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.stop.is_set():
            log.warning("the supervisor is gone: stopping")
            self.stop.set()


def run_one(target: str, settings: ServiceSettings, *, supervised: bool = False) -> int:
    """Import the App and serve it in this process; configuration and service errors become exit codes."""
    received: list[int] = []  # a stop signal while importing: stop before connecting
    for signum in STOP_SIGNALS:
        signal.signal(signum, lambda signum, frame: received.append(signum))
    try:
        app = load_app(target)
        return asyncio.run(serve(app, settings, supervised=supervised, received=received))
    except ConfigurationError as exc:
        log.error("configuration error: %s", exc)
        return EXIT_CONFIG
    except PolybusError as exc:
        log.error("the service failed: %s: %s", type(exc).__name__, exc)
        return EXIT_FAILED
    except Exception:
        log.exception("the service failed")
        return EXIT_FAILED
