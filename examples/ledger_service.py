"""The service of example 09: ledger entries, applied in order per account, by any number of processes.

Run it on its own from this directory: ``polybus run ledger_service:app --processes 2 --url URL``.
Each applied entry is published to ``ledger-applied`` with the pid of the process that applied it.
"""

import asyncio
import os
import random

from pydantic import BaseModel

import polybus


class Entry(BaseModel):
    account: str
    seq: int
    amount: float


class Applied(BaseModel):
    account: str
    seq: int
    pid: int


app = polybus.App()


@app.subscribe(
    "ledger", group="posting", concurrency=16, prefetch=20, ordered_by_key=True, publish_to="ledger-applied"
)
async def post(entry: Entry) -> Applied:
    # entries of one account (the message key) run one at a time, in order; accounts in parallel
    await asyncio.sleep(random.uniform(0.002, 0.02))  # uneven work: order would break without the key
    return Applied(account=entry.account, seq=entry.seq, pid=os.getpid())
