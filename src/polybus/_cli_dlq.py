"""``polybus dlq``: list, show, replay and purge the dead letters ``polybus_patterns.retry`` keeps per group.

    polybus dlq list URL [TOPIC [GROUP]]
    polybus dlq show URL TOPIC GROUP [-n N]
    polybus dlq replay URL TOPIC GROUP [--id ID ...] [--error-type T] [--limit N]
    polybus dlq purge URL TOPIC GROUP [--id ID ...] [--error-type T] [--limit N] [--yes]

Exit codes: 0 done, 1 nothing matched (or a purge not confirmed), 2 error. URLs are shown with
``polybus.redact_url``: a password is never printed. The dead letters are polybus-patterns' own, so
it is imported here, when the command runs (the core never imports it at import time), with rich
for the progress bar of long replays and purges.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TextIO

import polybus

if TYPE_CHECKING:
    from polybus_patterns import DeadLetter

__all__ = ["add_dlq_parser", "run_dlq"]

PAYLOAD_LIMIT = 200
HEADER_LIMIT = 300
PROGRESS_FROM = 200
"""Replays and purges of at least this many letters show a progress bar (on a terminal)."""
SCAN_LIMIT = 10_000
"""``list`` reads at most this many letters per group for its oldest/newest/error-type columns."""


def add_dlq_parser(sub: Any) -> None:
    """Add ``dlq`` and its four subcommands to the ``polybus`` parser's subparsers ``sub``."""
    dlq = sub.add_parser("dlq", help="list, show, replay or purge dead letters (needs polybus-patterns)")
    commands = dlq.add_subparsers(dest="dlq_command", required=True)
    listing = commands.add_parser("list", help="per group: count, oldest, newest, counts by error type")
    listing.add_argument("url", metavar="URL")
    listing.add_argument("topic", metavar="TOPIC", nargs="?")
    listing.add_argument("group", metavar="GROUP", nargs="?")
    show = commands.add_parser("show", help="the first dead letters of a group: headers, payload (truncated)")
    _where(show)
    show.add_argument("-n", type=int, default=10, metavar="N", help="how many (default 10)")
    for name, text in (
        ("replay", "send dead letters back to their group (only that group; same ids)"),
        ("purge", "remove dead letters"),
    ):
        command = commands.add_parser(name, help=text)
        _where(command)
        command.add_argument("--id", action="append", dest="ids", metavar="ID", help="only this id (repeat)")
        command.add_argument("--error-type", metavar="T", help="only this error type (ValueError, ...)")
        command.add_argument("--limit", type=int, metavar="N", help="at most N")
        if name == "purge":
            command.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")


def _where(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("url", metavar="URL")
    parser.add_argument("topic", metavar="TOPIC")
    parser.add_argument("group", metavar="GROUP")


def run_dlq(args: argparse.Namespace, *, stdin: TextIO | None = None) -> int:
    """Run ``polybus dlq ...``; returns the exit code (errors are printed, never raised)."""
    try:
        import polybus_patterns  # noqa: F401  (the dead letters are polybus-patterns')
    except ImportError:
        print(
            "polybus: error: `polybus dlq` needs polybus-patterns: pip install 'polybus[patterns]'",
            file=sys.stderr,
        )
        return 2
    try:
        return asyncio.run(_run(args, stdin or sys.stdin))
    except polybus.PolybusError as exc:
        print(f"polybus: error: {exc}", file=sys.stderr)
        return 2


async def _run(args: argparse.Namespace, stdin: TextIO) -> int:
    async with polybus.connect(args.url) as broker:
        command = args.dlq_command
        if command == "list":
            return await _list(broker, args.topic, args.group)
        if command == "show":
            return await _show(broker, args.topic, args.group, args.n)
        if args.limit is not None and args.limit < 1:
            raise polybus.ConfigurationError(f"--limit must be >= 1, got {args.limit}")
        if command == "replay":
            return await _replay(broker, args)
        return await _purge(broker, args, stdin)


async def _list(broker: polybus.Broker, topic: str | None, group: str | None) -> int:
    from polybus_patterns import DeadLetters, dead_letter_groups

    pairs = [(topic, group)] if topic and group else await dead_letter_groups(broker, topic)
    print(f"dead letters on {broker.display_url}")
    total = 0
    for t, g in pairs:
        dead = DeadLetters(broker, t, g)
        count = await dead.count()
        total += count
        if not count:
            if topic is not None:  # asked about this topic: say its groups have none
                print(f"  {t}/{g}: 0")
            continue
        letters = await dead.peek(limit=min(count, SCAN_LIMIT))
        times = sorted(x.failed_at for x in letters if x.failed_at is not None)
        kinds = collections.Counter(x.error_type or "?" for x in letters)
        scanned = "" if len(letters) >= count else f" (first {len(letters)} read)"
        print(f"  {t}/{g}: {count}{scanned}")
        if times:
            oldest, newest = (t.isoformat(timespec="seconds") for t in (times[0], times[-1]))
            print(f"    oldest {oldest}  newest {newest}")
        for kind, n in kinds.most_common():
            print(f"    {n:>8}  {kind}")
    if total == 0:
        print("  no dead letters")
        return 1
    return 0


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _payload(letter: DeadLetter) -> str:
    try:
        text = letter.body.decode()
    except UnicodeDecodeError:
        return _cut(repr(letter.body), PAYLOAD_LIMIT)
    return _cut(text, PAYLOAD_LIMIT)


async def _show(broker: polybus.Broker, topic: str, group: str, n: int) -> int:
    from polybus_patterns import DeadLetters

    letters = await DeadLetters(broker, topic, group).peek(limit=max(1, n))
    if not letters:
        print(f"no dead letters for {topic}/{group} on {broker.display_url}")
        return 1
    for letter in letters:
        failed = letter.failed_at.isoformat(timespec="seconds") if letter.failed_at else "?"
        print(f"{letter.id}  key={letter.key!r}  attempts={letter.attempts}  failed {failed}")
        print(f"  {letter.error_type}: {_cut(letter.error or '', HEADER_LIMIT)}")
        for name, value in sorted(letter.headers.items()):
            print(f"  {name}: {_cut(value, HEADER_LIMIT)!r}")
        print(f"  payload ({len(letter.body)} bytes): {_payload(letter)}")
        print()
    return 0


async def _replay(broker: polybus.Broker, args: argparse.Namespace) -> int:
    from polybus_patterns import DeadLetters

    dead = DeadLetters(broker, args.topic, args.group)
    with _progress("replaying", await dead.count()) as step:
        done = await dead.replay(args.ids, error_type=args.error_type, limit=args.limit, progress=step)
    print(f"replayed {done} dead letter(s) to group {args.group!r} of {args.topic!r}")
    return 0 if done else 1


async def _purge(broker: polybus.Broker, args: argparse.Namespace, stdin: TextIO) -> int:
    from polybus_patterns import DeadLetters

    dead = DeadLetters(broker, args.topic, args.group)
    count = await dead.count()
    if count == 0:
        print(f"no dead letters for {args.topic}/{args.group}")
        return 1
    if not args.yes:
        which = "" if not (args.ids or args.error_type or args.limit) else " (those the filters choose)"
        print(
            f"purge dead letters of {args.topic}/{args.group}{which}, of {count}? [y/N] ", end="", flush=True
        )
        answer = stdin.readline().strip().lower()
        if answer not in ("y", "yes"):
            print("nothing purged")
            return 1
    with _progress("purging", count) as step:
        done = await dead.purge(args.ids, error_type=args.error_type, limit=args.limit, progress=step)
    print(f"purged {done} dead letter(s) of {args.topic}/{args.group}")
    return 0 if done else 1


class _progress:
    """A rich progress bar for runs of :data:`PROGRESS_FROM` letters or more, on a terminal."""

    def __init__(self, what: str, total: int) -> None:
        self.what = what
        self.total = total
        self.bar: Any = None

    def __enter__(self) -> Callable[[int, int], None]:
        if self.total >= PROGRESS_FROM and sys.stdout.isatty():
            from rich.progress import Progress

            self.bar = Progress(transient=True)
            self.bar.start()
            task = self.bar.add_task(self.what, total=self.total)

            def step(done: int, total: int) -> None:
                self.bar.update(task, completed=done, total=max(total, done))

            return step
        return lambda done, total: None

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()
