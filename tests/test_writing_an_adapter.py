"""docs/writing-an-adapter.md's walkthrough is real code: run it, drive the adapter it builds, and
check that it imports nothing private of polybus."""

from __future__ import annotations

import ast
import asyncio
import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

import polybus

DOC = Path(__file__).resolve().parents[1] / "docs" / "writing-an-adapter.md"


def _walkthrough_source() -> str:
    text = DOC.read_text(encoding="utf-8")
    section = text.split("## Walkthrough", 1)[1]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) >= 5, "the walkthrough lost its code blocks"
    return "\n\n".join(blocks)


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    path = tmp_path_factory.mktemp("toy") / "toy_adapter.py"
    path.write_text(_walkthrough_source(), encoding="utf-8")
    spec = importlib.util.spec_from_file_location("toy_adapter", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["toy_adapter"] = module  # dataclass-like annotations resolve through sys.modules
    spec.loader.exec_module(module)
    return module


def test_the_walkthrough_imports_only_the_public_interface() -> None:
    tree = ast.parse(_walkthrough_source())
    imported = {
        alias.name if isinstance(node, ast.Import) else node.module or ""
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    polybus_modules = {name for name in imported if name.split(".")[0] == "polybus"}
    assert polybus_modules == {"polybus", "polybus.adapter"}


def test_the_tour_runs(toy: ModuleType) -> None:
    asyncio.run(toy.tour())


def test_the_toy_adapter_keeps_the_model(toy: ModuleType) -> None:
    async def scenario() -> None:
        async with polybus.connect("toy://?prefetch=5") as broker:
            assert broker.default_prefetch == 5
            topic = broker.topic("t")
            with pytest.raises(polybus.ConfigurationError, match="unknown consumer option 'colour'"):
                topic.consumer("g", colour="red")
            with pytest.raises(polybus.UnsupportedCapabilityError):
                topic.consumer("g", start="earliest")
            a, b = topic.consumer("a", tag="x"), topic.consumer("b")
            assert "tag='x'" in repr(a)
            async with a, b, topic.producer() as producer:
                ids = await producer.send_many([b"1", b"2", b"3"])
                got_a = [await a.receive(timeout=1) for _ in ids]
                got_b = [await b.receive(timeout=1) for _ in ids]
                assert [d.id for d in got_a if d] == ids == [d.id for d in got_b if d]  # fan-out
                first, second, third = got_a
                assert first and second and third
                await first.ack()
                await second.nack(delay=0.2)
                await third.reject()
                assert await a.receive(timeout=0.05) is None  # not before its delay
                again = await a.receive(timeout=2)
                assert again is not None and (again.id, again.attempt) == (ids[1], 2)
                stats = await topic.stats()
                assert stats.groups["b"].backlog == 0  # b holds its three unsettled
            stats = await topic.stats()
            assert stats.groups["b"].backlog == 3 and stats.groups["a"].backlog == 1  # handed back
            await topic.delete()
            with pytest.raises(polybus.NotFoundError):
                await topic.stats()
        with pytest.raises(polybus.ConfigurationError, match="invalid toy options"):
            polybus.connect("toy://?prefetch=0")

    asyncio.run(scenario())
