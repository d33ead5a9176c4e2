"""The responder of the request-reply tests: a ``polybus.App`` in the pinned shape, whose handler's
return value is the reply. ``quote`` prices a :class:`QuoteRequest` (the price names the process
that answered) and raises :class:`NoQuote` for the item ``"unobtainium"``.

Run in-process (``app.start`` / ``app.run`` with ``topics={"quotes": <physical name>}``) or as a
process of its own: ``python responder.py URL TOPIC [CONCURRENCY]`` maps ``quotes`` to ``TOPIC``,
prints ``ready`` once its group is joined, serves until its stdin closes, then prints how many
requests it answered.
"""

from __future__ import annotations

import asyncio
import os
import sys

import pydantic

import polybus

UNOBTAINABLE = "unobtainium"


class QuoteRequest(pydantic.BaseModel):
    item: str
    quantity: int


class Quote(pydantic.BaseModel):
    item: str
    quantity: int
    total: float
    by: int
    """The process id of the responder that answered."""


class NoQuote(Exception):
    """Raised for an item with no price."""


app = polybus.App()
answered = 0


@app.subscribe("quotes", group="pricing")
async def quote(req: QuoteRequest) -> Quote:
    global answered
    if req.item == UNOBTAINABLE:
        raise NoQuote(f"no price for {req.item}")
    answered += 1
    return Quote(item=req.item, quantity=req.quantity, total=req.quantity * 2.5, by=os.getpid())


async def _main(url: str, topic: str, concurrency: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_reader(sys.stdin.fileno(), lambda: stop.set() if not sys.stdin.buffer.read1(1) else None)
    topics = {"quotes": topic}
    overrides = {"quote": {"concurrency": concurrency}}
    async with polybus.connect(url) as broker:
        consumers = await app.start(broker, topics=topics, overrides=overrides)
        print("ready", flush=True)
        await app.run(broker, stop=stop, consumers=consumers, grace_period=10)
    print(f"answered {answered}", flush=True)


if __name__ == "__main__":
    asyncio.run(_main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 1))
