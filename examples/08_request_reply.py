"""Request-reply: a pricing service answers quote requests; what its handler returns is the reply.

``Requester.request`` sends a request and waits for its reply (``OperationTimeout`` after
``timeout``). A handler that raises answers with an error reply, raised as ``RemoteError``.

Run on any broker: python examples/08_request_reply.py --url nats://localhost:4222
"""

import argparse
import asyncio
import os

from polybus_patterns import RemoteError, Requester
from pydantic import BaseModel

import polybus


class QuoteRequest(BaseModel):
    sku: str
    quantity: int


class Quote(BaseModel):
    sku: str
    total: float


PRICES = {"apple": 0.5, "pear": 0.75, "plum": 0.3}
app = polybus.App()


@app.subscribe("quotes", group="pricing", concurrency=4)
async def quote(request: QuoteRequest) -> Quote:  # no publish_to: the return value is the reply
    if request.sku not in PRICES:
        raise LookupError(f"no price for {request.sku!r}")
    return Quote(sku=request.sku, total=PRICES[request.sku] * request.quantity)


async def main(url: str) -> None:
    async with polybus.connect(url) as broker:
        consumers = await app.start(broker)
        stop = asyncio.Event()
        service = asyncio.create_task(app.run(broker, stop=stop, consumers=consumers))
        async with Requester(broker) as requester:
            asks = [QuoteRequest(sku=sku, quantity=10) for sku in PRICES]
            replies = await asyncio.gather(*(requester.request("quotes", ask, timeout=10) for ask in asks))
            quotes = [reply.decode(Quote) for reply in replies]
            for q in quotes:
                print(f"quote: 10 x {q.sku} = {q.total:.2f}")
            try:
                await requester.request("quotes", QuoteRequest(sku="durian", quantity=1), timeout=10)
            except RemoteError as error:
                print(f"error reply: {error.type}: {error.message}")
                failed = error.type
        stop.set()
        await service
        assert [q.sku for q in quotes] == list(PRICES) and failed == "builtins.LookupError"
        print(f"OK {len(quotes)} quotes and one error reply")
        await broker.topic("quotes").delete()  # an example cleans up; a real service keeps its topics


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("POLYBUS_URL", "memory://"), help="broker URL")
    asyncio.run(main(parser.parse_args().url))
