"""The redis adapter on ``polybus.adapter``: ``start=`` and ``name=`` beyond the contract suite, closing,
and the adapter's module structure."""

from __future__ import annotations

import ast
import asyncio
import graphlib
import pathlib

import pytest
from polybus_redis import RedisConsumer

import polybus
from polybus.testing import unique_name

SRC = pathlib.Path(__file__).parents[1] / "src" / "polybus_redis"


async def _bodies(consumer: polybus.Consumer, n: int) -> list[bytes]:
    got = []
    for _ in range(n):
        d = await consumer.receive(timeout=5)
        assert d is not None
        await d.ack()
        got.append(d.body)
    return got


async def test_start_applies_only_when_the_group_is_created(polybus_url: str) -> None:
    async with polybus.connect(polybus_url) as broker:
        topic = broker.topic(unique_name("existing"))
        group = unique_name("g")
        async with topic.producer() as producer:
            await producer.send(b"before the group")
            async with topic.consumer(group):  # creates the group at "$"
                pass
            await producer.send(b"after the group")
            async with topic.consumer(group, start="earliest") as consumer:
                assert await _bodies(consumer, 1) == [b"after the group"]
                assert await consumer.receive(timeout=0.2) is None
        await topic.delete()


async def test_a_listener_with_start_earliest_reads_the_whole_stream(polybus_url: str) -> None:
    async with polybus.connect(polybus_url) as broker:
        topic = broker.topic(unique_name("listen-earliest"))
        async with topic.producer() as producer:
            await producer.send_many([b"a", b"b"])
            async with topic.consumer(start="earliest") as everything, topic.consumer() as fresh:
                await producer.send(b"c")
                assert await _bodies(everything, 3) == [b"a", b"b", b"c"]
                assert await _bodies(fresh, 1) == [b"c"]
        await topic.delete()


async def test_the_consumer_name_option(polybus_url: str) -> None:
    async with polybus.connect(polybus_url) as broker:
        assert broker.capabilities.replay is polybus.Support.NATIVE
        topic = broker.topic(unique_name("options"))
        with pytest.raises(polybus.ConfigurationError, match="consumer option 'name'"):
            topic.consumer("g", name="")
        with pytest.raises(polybus.ConfigurationError, match="reserved"):
            topic.consumer("g", name="polybus-parked")
        consumer = topic.consumer("g", name="worker-1")
        assert isinstance(consumer, RedisConsumer) and consumer.name == "worker-1"


async def test_cancelling_a_close_is_not_swallowed(polybus_url: str) -> None:
    async with polybus.connect(polybus_url) as broker:
        topic = broker.topic(unique_name("close"))
        consumer = topic.consumer(unique_name("g"))
        await consumer.open()
        closing = asyncio.create_task(consumer.aclose())
        await asyncio.sleep(0)
        closing.cancel()
        await asyncio.wait({closing})
        assert closing.cancelled()
        await topic.delete()


def _runtime_imports(path: pathlib.Path) -> set[str]:
    """The ``polybus_redis`` modules ``path`` imports at run time (at the top or inside functions);
    fails if it imports a private core module (``polybus._*``)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, ast.ImportFrom) and child.module:
                assert not child.module.startswith("polybus._"), f"{path.name} imports {child.module}"
                if child.module == "polybus_redis":
                    found.update(f"polybus_redis.{a.name}" for a in child.names)
                elif child.module.startswith("polybus_redis."):
                    found.add(child.module)
            visit(child)

    visit(ast.parse(path.read_text()))
    return {m for m in found if (SRC / f"{m.split('.')[1]}.py").exists()}


def test_modules_import_in_one_direction_and_only_public_core_names() -> None:
    graph = {}
    for path in SRC.glob("*.py"):
        imports = _runtime_imports(path)
        if path.name != "__init__.py":
            graph[f"polybus_redis.{path.stem}"] = imports
    order = list(graphlib.TopologicalSorter(graph).static_order())  # raises CycleError on a cycle
    assert order.index("polybus_redis._wire") < order.index("polybus_redis._consumer")
