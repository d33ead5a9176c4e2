"""The ``polybus`` command line: ``demo``, ``capabilities`` and ``brokers``.

Imports the public API; broker provisioning (test tooling) is imported only by ``brokers``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

import polybus
from polybus._cli_dlq import add_dlq_parser, run_dlq

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="polybus", description="polybus: one messaging API, any broker.")
    parser.add_argument("--version", action="version", version=f"polybus {polybus.__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
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


if __name__ == "__main__":
    sys.exit(main())
