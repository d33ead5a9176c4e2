"""Benchmark polybus against the raw client library of a broker, in one run.

    uv run --all-packages python bench/run.py --broker redis
    uv run --all-packages python bench/run.py --broker kafka --messages 5000 --json out.json
    uv run --all-packages python bench/run.py --broker nats --backlog-rss 200000

For the broker (URL from ``--url``, else found or started by ``polybus.testing.provision``), each
of ``--repeat`` rounds runs one cycle of polybus and one of the raw client, alternating which goes
first; each cycle runs in its own process (so its RSS is its own) on a fresh topic and group. The
table shows the median of the rounds and the ratio polybus/raw. See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from measure import CycleResult, Driver, RssSampler, run_cycle
from report import median_of, table

BROKERS = ("memory", "redis", "rabbitmq", "nats", "kafka", "sqs")
DEFAULT_MESSAGES = {
    "memory": 20_000,
    "redis": 20_000,
    "rabbitmq": 10_000,
    "nats": 10_000,
    "kafka": 10_000,
    "sqs": 600,
}
DEFAULT_ROUNDTRIPS = {"sqs": 50}
NO_ADAPTER = "adapter not installed"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="polybus vs raw client benchmark (see docs/benchmarks.md)")
    parser.add_argument("--broker", choices=BROKERS, default="memory")
    parser.add_argument("--url", help="broker URL (default: found or started by polybus.testing.provision)")
    parser.add_argument("--messages", type=int, help="messages per cycle (default depends on the broker)")
    parser.add_argument("--size", type=int, default=256, help="body size in bytes (default 256)")
    parser.add_argument("--roundtrips", type=int, help="round trips per cycle (default 200; sqs 50)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; the table shows their median")
    parser.add_argument("--only", choices=["polybus", "raw"], help="run one column only")
    parser.add_argument("--batch", type=int, default=500, help="messages per send_many / raw batch")
    parser.add_argument(
        "--window", type=int, default=1, help="polybus and raw kafka: batches under way at once"
    )
    parser.add_argument(
        "--partitions", type=int, default=1, help="kafka: partitions of the topic in both columns (default 1)"
    )
    parser.add_argument(
        "--raw-headers", action="store_true", help="kafka: raw records carry polybus's id header too"
    )
    parser.add_argument("--phase-seconds", type=float, default=60.0, help="time bound of each phase")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE")
    parser.add_argument(
        "--backlog-rss",
        type=int,
        nargs="?",
        const=200_000,
        metavar="N",
        help="instead: drain a backlog of N (default 200,000) through polybus and report peak RSS",
    )
    parser.add_argument("--worker", choices=["polybus", "raw", "backlog"], help=argparse.SUPPRESS)
    return parser


def make_driver(
    kind: str, broker: str, url: str, batch: int, partitions: int = 1, window: int = 1, headers: bool = False
) -> Driver | str:
    """The driver for ``kind`` on ``broker``, or the reason there is none."""
    if kind == "polybus":
        import polybus

        if url.split("://", 1)[0].lower() not in polybus.installed_schemes():
            return NO_ADAPTER
        from driver_polybus import PolybusDriver

        if broker == "kafka":
            url = f"{url}{'&' if '?' in url else '?'}partitions={partitions}"
        return PolybusDriver(url, batch=batch, window=window)
    if broker == "redis":
        from raw_redis import RawRedis

        return RawRedis(url)
    if broker == "rabbitmq":
        from raw_rabbitmq import RawRabbitMQ

        return RawRabbitMQ(url)
    if broker == "kafka":
        from raw_kafka import RawKafka

        return RawKafka(url, partitions=partitions, batch=batch, window=window, headers=headers)
    if broker == "nats":
        from raw_nats import RawNats

        return RawNats(url)
    if broker == "sqs":
        from raw_sqs import RawSqs

        return RawSqs(url)
    return "no raw client (in-process broker)"


# -- worker: one cycle in this process -------------------------------------------------------------


def worker(args: argparse.Namespace) -> int:
    if args.worker == "backlog":
        job = backlog_rss(args.url, args.backlog_rss, args.size, args.batch, args.phase_seconds)
        result = asyncio.run(job)
    else:
        driver = make_driver(
            args.worker, args.broker, args.url, args.batch, args.partitions, args.window, args.raw_headers
        )
        if isinstance(driver, str):
            result = {"driver": args.worker, "unavailable": driver}
        else:
            try:
                result = asyncio.run(
                    run_cycle(
                        driver,
                        messages=args.messages,
                        size=args.size,
                        roundtrips=args.roundtrips,
                        phase_seconds=args.phase_seconds,
                    )
                ).as_dict()
            except Exception as exc:  # reported in the table, not a traceback in the middle of it
                result = CycleResult(args.worker, error=f"{type(exc).__name__}: {exc}"[:300]).as_dict()
    print(json.dumps(result))
    return 0


async def backlog_rss(url: str, count: int, size: int, batch: int, phase_seconds: float) -> dict[str, Any]:
    """Publish ``count`` messages through polybus, then drain them, sampling peak RSS."""
    from driver_polybus import PolybusDriver

    driver = PolybusDriver(url, batch=max(batch, 1000))
    body = b"x" * size
    await driver.setup(f"bench-backlog-{os.getpid()}", "bench-backlog-g")
    try:
        start = time.perf_counter()
        published = await driver.publish(body, count, time.monotonic() + phase_seconds)
        publish_s = time.perf_counter() - start
        before = RssSampler().peak_mib
        with RssSampler() as rss:
            start = time.perf_counter()
            drained = await driver.consume(published, time.monotonic() + phase_seconds)
            drain_s = time.perf_counter() - start
    finally:
        await driver.teardown()
    return {
        "mode": "backlog-rss",
        "published": published,
        "drained": drained,
        "publish_rate": published / publish_s,
        "drain_rate": drained / drain_s,
        "rss_before_drain_mib": before,
        "drain_peak_rss_mib": rss.peak_mib,
    }


# -- orchestrator ------------------------------------------------------------------------------------


def _resolve_url(args: argparse.Namespace) -> tuple[str, str]:
    if args.url:
        return args.url, "given by --url"
    if args.broker == "memory":
        return "memory://", "in-process"
    from polybus.testing import provision

    try:
        found = provision.acquire(args.broker)
    except provision.BrokerUnavailable as exc:
        raise SystemExit(f"no {args.broker} broker: {exc}") from None
    return found.url, found.describe()


def _spawn(kind: str, args: argparse.Namespace, url: str) -> dict[str, Any]:
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        kind,
        "--broker",
        args.broker,
        "--url",
        url,
        "--messages",
        str(args.messages),
        "--size",
        str(args.size),
        "--roundtrips",
        str(args.roundtrips),
        "--batch",
        str(args.batch),
        "--phase-seconds",
        str(args.phase_seconds),
        "--partitions",
        str(args.partitions),
        "--window",
        str(args.window),
        *(["--raw-headers"] if args.raw_headers else []),
    ]
    if kind == "backlog":
        command += ["--backlog-rss", str(args.backlog_rss)]
    limit = args.phase_seconds * 3 + 120
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=limit, check=False)
    except subprocess.TimeoutExpired:
        return CycleResult(kind, error=f"cycle killed after {limit:.0f}s").as_dict()
    lines = done.stdout.strip().splitlines()
    try:
        result: dict[str, Any] = json.loads(lines[-1])
    except (IndexError, ValueError):
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return CycleResult(kind, error=f"worker exited {done.returncode}: {tail}"[:300]).as_dict()
    return result


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    args.messages = args.messages or DEFAULT_MESSAGES[args.broker]
    if args.roundtrips is None:
        args.roundtrips = DEFAULT_ROUNDTRIPS.get(args.broker, 200)
    if args.worker:
        return worker(args)
    url, how = _resolve_url(args)
    print(f"broker: {args.broker}: {how}", flush=True)
    if args.backlog_rss:
        result = _spawn("backlog", args, url)
        print(json.dumps(result, indent=2))
        _write_json(args, {"broker": args.broker, "url_source": how, "backlog": result})
        return 0 if "error" not in result else 1
    kinds = [args.only] if args.only else ["polybus", "raw"]
    layout = f", {args.partitions} partition(s)" if args.broker == "kafka" else ""
    layout += ", raw records with polybus's id header" if args.raw_headers else ""
    print(
        f"{args.messages} messages x {args.size} B{layout}, batches of {args.batch} "
        f"({args.window} under way), {args.roundtrips} round trips, median of {args.repeat}"
    )
    cycles: dict[str, list[dict[str, Any]]] = {kind: [] for kind in kinds}
    unavailable: dict[str, str] = {}
    for round_no in range(args.repeat):
        order = kinds if round_no % 2 == 0 else kinds[::-1]
        for kind in order:
            if kind in unavailable:
                continue
            result = _spawn(kind, args, url)
            if "unavailable" in result:
                unavailable[kind] = result["unavailable"]
                continue
            cycles[kind].append(result)
            rate = result.get("publish_rate") or 0
            error = result.get("error") or "none"
            print(f"  round {round_no + 1} {kind}: publish {rate:,.0f}/s, error: {error}", flush=True)
    columns: dict[str, dict[str, Any] | str] = {
        kind: unavailable.get(kind) or median_of(cycles[kind]) for kind in kinds
    }
    print(table(columns))
    _write_json(
        args,
        {
            "broker": args.broker,
            "url_source": how,
            "messages": args.messages,
            "size": args.size,
            "roundtrips": args.roundtrips,
            "repeat": args.repeat,
            "columns": columns,
            "cycles": cycles,
        },
    )
    return 0


def _write_json(args: argparse.Namespace, document: dict[str, Any]) -> None:
    if args.json:
        Path(args.json).write_text(json.dumps(document, indent=2) + "\n")


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        if "polybus.testing.provision" in sys.modules:
            sys.modules["polybus.testing.provision"].release_all()
