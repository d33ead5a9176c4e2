"""Ordered competing consumers: ``polybus run --processes 2`` shares a group between two processes.

Within a process, entries with the same key (the account) are handled one at a time in order while
other accounts run in parallel (``ordered_by_key=True``). Across processes order per key needs a
broker that gives each key to one consumer of the group (``key_affinity``: Kafka, SQS FIFO).
The service is examples/ledger_service.py; memory:// lives in one process, so there it runs here.

Run on any broker: python examples/09_ordered_competing_consumers.py --url kafka://localhost:9092
"""

import argparse
import asyncio
import collections
import os
import signal
import sys
from pathlib import Path

import ledger_service  # the service module beside this script
from polybus_patterns import declare

import polybus

ACCOUNTS, ENTRIES = 10, 20  # entries per account


async def main(url: str) -> None:
    async with polybus.connect(url) as broker:
        if broker.capabilities.ordering_per_key is polybus.Support.UNSUPPORTED:  # SQS unless fifo=true
            sys.exit(f"{broker.display_url} keeps no order per key (capability ordering_per_key)")
        await declare(broker, ledger_service.app)  # before the workers start: nothing is missed
        await declare(broker, {"ledger-applied": ["checker"]})
        if broker.scheme == "memory":
            stop = asyncio.Event()
            workers = asyncio.create_task(ledger_service.app.run(broker, stop=stop))
        else:
            command = [sys.executable, "-m", "polybus", "run", "ledger_service:app", "--processes", "2"]
            runner = await asyncio.create_subprocess_exec(*command, "--url", url, cwd=Path(__file__).parent)
        entries = [
            polybus.Message.of(ledger_service.Entry(account=f"acct-{a}", seq=s, amount=1.0), key=f"acct-{a}")
            for s in range(ENTRIES)
            for a in range(ACCOUNTS)
        ]
        async with broker.topic("ledger").producer() as producer:
            await producer.send_many(entries)
        applied: dict[str, list[int]] = collections.defaultdict(list)
        pids: set[int] = set()
        async with broker.topic("ledger-applied").consumer("checker") as consumer:
            while sum(map(len, applied.values())) < len(entries):
                delivery = await consumer.receive(timeout=60)
                assert delivery is not None, "the workers stopped applying entries"
                done = delivery.decode(ledger_service.Applied)
                applied[done.account].append(done.seq)
                pids.add(done.pid)
                await delivery.ack()
        if broker.scheme == "memory":
            stop.set()
            await workers
        else:
            runner.send_signal(signal.SIGTERM)  # graceful: running handlers finish, then exit 0
            assert await asyncio.wait_for(runner.wait(), 60) == 0, "polybus run did not stop cleanly"
        in_order = all(seqs == list(range(ENTRIES)) for seqs in applied.values())
        assert all(sorted(seqs) == list(range(ENTRIES)) for seqs in applied.values())  # none lost
        affinity = broker.capabilities.key_affinity is polybus.Support.NATIVE
        if broker.scheme == "memory" or affinity:  # one process, or each key on one consumer
            assert in_order, {a: s for a, s in applied.items() if s != sorted(s)}
        why = "" if affinity else f" ({broker.scheme}:// has no key affinity: order holds per process)"
        print(f"applied by {len(pids)} process(es); in order per account: {in_order}{why}")
        print(f"OK {len(entries)} entries of {ACCOUNTS} accounts applied, none lost")
        for topic in ("ledger", "ledger-applied"):  # an example cleans up; a real service keeps them
            await broker.topic(topic).delete()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("POLYBUS_URL", "memory://"), help="broker URL")
    asyncio.run(main(parser.parse_args().url))
