"""Run the fault-injection suite (tests/chaos) at full size and write the reliability report.

    uv run --all-packages python bench/chaos.py                      # full size, every broker
    uv run --all-packages python bench/chaos.py --scale 0.1 --brokers redis,nats --out -
    uv run --all-packages python bench/chaos.py --render rows.jsonl  # re-render saved rows

It runs ``pytest tests/chaos`` with ``POLYBUS_CHAOS_SCALE`` (1 = the sizes the issue names: 20,000
messages, 3 restarts, 60 s of slow consumer ...) and ``POLYBUS_CHAOS_REPORT`` (each scenario appends
one JSON row per broker), then renders the rows as a Markdown table into ``docs/reliability.md``
between its ``<!-- chaos:begin -->`` and ``<!-- chaos:end -->`` marks, with the command, the commit
and the date. A failing scenario still leaves its row (when it got that far) and fails the run.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "reliability.md"
BEGIN, END = "<!-- chaos:begin -->", "<!-- chaos:end -->"
BROKERS = ("memory", "redis", "rabbitmq", "kafka", "nats", "sqs")
COLUMNS = [
    ("scenario", "scenario"),
    ("broker", "broker"),
    ("sent", "messages"),
    ("lost", "lost"),
    ("duplicates", "duplicated"),
    ("unexpected", "unexpected"),
    ("recovered", "recovered"),
    ("faults", "faults"),
    ("max_gap_after_fault", "time to recover (s)"),
    ("seconds", "seconds"),
]
"""(row key, column title) of the table; other keys of a row go into its notes column."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="fault-injection suite at full size (docs/reliability.md)")
    parser.add_argument("--scale", type=float, default=1.0, help="size of each scenario (1 = full size)")
    parser.add_argument("--brokers", help=f"comma-separated subset of {','.join(BROKERS)} (default: all)")
    parser.add_argument("-k", dest="keyword", help="pytest -k expression: a subset of the scenarios")
    parser.add_argument(
        "-n", dest="workers", type=int, default=3, help="pytest-xdist workers (0: one process; default 3)"
    )
    parser.add_argument("--out", default=str(DOC), help="where the report goes ('-' prints it)")
    parser.add_argument("--rows", help="also keep the raw JSON rows in this file")
    parser.add_argument("--render", metavar="ROWS", help="only render saved JSON rows; run nothing")
    return parser


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def render(rows: list[dict[str, Any]]) -> str:
    """The Markdown table of ``rows`` (one per scenario and broker), in scenario then broker order."""
    order = {name: index for index, name in enumerate(BROKERS)}
    rows = sorted(rows, key=lambda r: (r.get("scenario", ""), order.get(r.get("broker", ""), 99)))
    known = {key for key, _ in COLUMNS} | {"scale", "deliveries", "delivered", "send_failed"}
    lines = [
        "| " + " | ".join(title for _, title in COLUMNS) + " | notes |",
        "|" + "---|" * (len(COLUMNS) + 1),
    ]
    for row in rows:
        notes = ", ".join(f"{k}={_cell(v)}" for k, v in row.items() if k not in known)
        cells = [_cell(row.get(key)) for key, _ in COLUMNS]
        lines.append("| " + " | ".join(cells) + f" | {notes} |")
    return "\n".join(lines)


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        )
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True)
    except OSError:
        return "unknown"
    return out.stdout.strip() + (" (with uncommitted changes)" if dirty.stdout.strip() else "")


def section(rows: list[dict[str, Any]], command: str, outcome: str) -> str:
    scales = sorted({float(r.get("scale", 0)) for r in rows})
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return "\n".join(
        [
            BEGIN,
            f"Run on {when}, commit {_commit()}, scale {', '.join(map(str, scales)) or '-'}: `{command}` "
            f"({outcome}).",
            "",
            render(rows),
            END,
        ]
    )


def write(report: str, out: str) -> None:
    if out == "-":
        print(report)
        return
    path = Path(out)
    text = path.read_text(encoding="utf-8") if path.exists() else f"# Reliability\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text or END not in text:
        text = text.rstrip("\n") + f"\n\n{BEGIN}\n{END}\n"
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    path.write_text(head + report + tail, encoding="utf-8")
    print(f"wrote {path}")


def _read_rows(path: str) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as rows:
        return [json.loads(line) for line in rows if line.strip()]


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.render:
        rows = _read_rows(args.render)
        write(section(rows, f"bench/chaos.py --render {args.render}", "re-rendered"), args.out)
        return 0
    env = dict(os.environ, POLYBUS_CHAOS_SCALE=str(args.scale))
    if args.brokers:
        env["POLYBUS_CHAOS_BROKERS"] = args.brokers
    with tempfile.TemporaryDirectory() as scratch:
        rows_path = args.rows or str(Path(scratch) / "rows.jsonl")
        Path(rows_path).write_text("", encoding="utf-8")
        env["POLYBUS_CHAOS_REPORT"] = rows_path
        command = [sys.executable, "-m", "pytest", "tests/chaos", "-q", "-p", "no:cacheprovider"]
        if args.keyword:
            command += ["-k", args.keyword]
        command += ["-n", str(args.workers), "--dist", "worksteal"] if args.workers else ["-p", "no:xdist"]
        started = time.monotonic()
        code = subprocess.run(command, cwd=ROOT, env=env).returncode
        took = time.monotonic() - started
        rows = _read_rows(rows_path)
    shown = "python bench/chaos.py " + " ".join(argv if argv is not None else sys.argv[1:])
    outcome = f"{'all scenarios passed' if code == 0 else f'pytest exit code {code}'}, {took / 60:.1f} min"
    write(section(rows, shown.strip(), outcome), args.out)
    return code


if __name__ == "__main__":
    sys.exit(main())
