"""The same service on any broker, changed by configuration only: examples/any_broker/polybus.toml.

The service (any_broker/service.py) uses logical topic names; its polybus.toml names the broker,
the topics' names there and the concurrency. ``POLYBUS_URL`` overrides the file's url (the
environment comes before the file). This script loads the settings as ``polybus run`` does, runs
the service, sends it a few signups and checks they were all welcomed.

Run: python examples/10_same_service_any_broker.py [--config FILE] [--url URL]
The service alone: cd examples/any_broker && polybus run service:app
"""

import argparse
import asyncio
import sys
from pathlib import Path

import polybus

HERE = Path(__file__).resolve().parent / "any_broker"
sys.path.insert(0, str(HERE))
import service  # noqa: E402 - the service module in any_broker/

N = 8


async def main(config: Path, url: str | None) -> None:
    settings = polybus.ServiceSettings(_config_file=config, **({"url": url} if url else {}))
    print(f"config {settings.config_file}: broker {settings.display_url()}, topics {settings.topics}")
    async with polybus.connect(settings.url_value()) as broker:
        options = settings.run_options()  # topics, subscription overrides, grace period
        consumers = await service.app.start(broker, topics=options["topics"], overrides=options["overrides"])
        stop = asyncio.Event()
        running = asyncio.create_task(service.app.run(broker, stop=stop, consumers=consumers))
        topic = settings.topics.get("signups", "signups")  # the physical name
        signups = [service.Signup(user=f"user-{i}", email=f"u{i}@example.com") for i in range(N)]
        async with broker.topic(topic).producer() as producer:
            await producer.send_many(signups)
        async with asyncio.timeout(30):
            while len(service.welcomed) < N:  # noqa: ASYNC110 - the demo's check, not the service's code
                await asyncio.sleep(0.05)
        stop.set()
        await running
        limit = settings.subscriptions["welcome"].concurrency
        assert sorted(set(service.welcomed)) == sorted(s.user for s in signups)
        assert service.peak <= (limit or 1), service.peak
        print(f"OK {N} signups welcomed on {broker.scheme}:// via {topic!r}, {service.peak} at once")
        await broker.topic(topic).delete()  # an example cleans up; a real service keeps its topics


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=HERE / "polybus.toml", help="the service's TOML file")
    parser.add_argument("--url", help="broker URL (default: POLYBUS_URL, else the file's url)")
    args = parser.parse_args()
    asyncio.run(main(args.config, args.url))
