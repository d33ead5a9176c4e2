"""The ``polybus`` command line: ``run``, ``demo``, ``capabilities``, ``brokers`` and ``dlq``.

``polybus run module:app`` reads :class:`~polybus.ServiceSettings` (options, environment, TOML file),
then serves the App in this process (:mod:`polybus._run`) or, with ``--processes N``, supervises N
worker processes (:mod:`polybus._supervisor`). Imports the public API and those two modules;
broker provisioning (test tooling) is imported only by ``brokers``; ``dlq`` lives in
:mod:`polybus._cli_dlq` (it imports polybus-patterns when it runs).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

import polybus
from polybus._cli_dlq import add_dlq_parser, run_dlq

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="polybus", description="polybus: one messaging API, any broker.")
    parser.add_argument("--version", action="version", version=f"polybus {polybus.__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser(
        "run",
        help="run a polybus.App until SIGTERM/SIGINT",
        description="Run a polybus.App. Settings come from these options, then POLYBUS_* environment "
        "variables, then --config FILE (else ./polybus.toml, else [tool.polybus] in ./pyproject.toml).",
    )
    run.add_argument("app", metavar="MODULE:APP", help="module:app or file.py:app (an App or a factory)")
    run.add_argument("--url", help="broker URL (prefer POLYBUS_URL: argv is visible to all)")
    run.add_argument("--config", metavar="FILE", help="TOML settings file")
    run.add_argument("--processes", type=int, metavar="N", help="worker processes (default 1)")
    run.add_argument("--grace-period", type=float, metavar="S", help="seconds to finish running handlers")
    run.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    run.add_argument("--worker", type=int, help=argparse.SUPPRESS)  # set by the supervisor
    demo = sub.add_parser("demo", help="run the order-processing demo (memory:// unless --url)")
    demo.add_argument("--url", default=os.environ.get("POLYBUS_URL", "memory://"), help="broker URL")
    caps = sub.add_parser("capabilities", help="print what a broker supports")
    caps.add_argument("--url", default=os.environ.get("POLYBUS_URL", "memory://"), help="broker URL")
    brokers = sub.add_parser("brokers", help="find, start (up) or stop (down) local brokers for tests")
    brokers.add_argument("args", nargs=argparse.REMAINDER, help="[status|up|down] [KIND...]")
    add_dlq_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``polybus`` command."""
    args = _parser().parse_args(argv)
    if args.command == "dlq":
        return run_dlq(args)
    try:
        if args.command == "run":
            return _run(args)
        if args.command == "demo":
            from polybus.demo import run_demo

            return asyncio.run(run_demo(args.url))
        if args.command == "capabilities":
            broker = polybus.connect(args.url)
            print(f"{broker.display_url}")
            for name, value in broker.capabilities.table().items():
                print(f"  {name:<22} {value}")
            return 0
        from polybus.testing import provision

        return provision.cli(args.args)
    except polybus.PolybusError as exc:
        print(f"polybus: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _run(args: argparse.Namespace) -> int:
    from polybus import _run, _supervisor

    options = {"url": args.url, "grace_period": args.grace_period, "processes": args.processes}
    settings = polybus.ServiceSettings(
        _config_file=args.config, **{key: value for key, value in options.items() if value is not None}
    )
    url = settings.url_value()
    level = getattr(logging, args.log_level)
    if settings.processes == 1:
        _run.setup_logging(f"worker {args.worker}" if args.worker else "service", level)
        return _run.run_one(args.app, settings, supervised=args.worker is not None)
    if url is None:
        raise polybus.ConfigurationError(
            "no broker URL: pass --url, set POLYBUS_URL, or put url in polybus.toml"
        )
    if url.startswith("memory:"):
        raise polybus.ConfigurationError("memory:// lives in one process: --processes needs a real broker")
    _run.load_app(args.app)  # an import error is reported once, before any worker starts
    _run.setup_logging("supervisor", level)

    def command(number: int) -> list[str]:
        argv = [sys.executable, "-m", "polybus", "run", args.app, "--processes", "1", "--worker", str(number)]
        argv += ["--grace-period", repr(settings.grace_period), "--log-level", args.log_level]
        if settings.config_file is not None:
            argv += ["--config", str(settings.config_file.resolve())]
        return argv

    supervisor = _supervisor.Supervisor(
        command,
        settings.processes,
        grace_period=settings.grace_period,
        env={**os.environ, "POLYBUS_URL": url},  # through the environment: argv is public
    )
    return asyncio.run(supervisor.run())


if __name__ == "__main__":
    sys.exit(main())
