"""``polybus demo`` runs on Kafka unchanged: two groups see every order, order #3 is billed on attempt 2."""

from __future__ import annotations

from polybus.demo import run_demo


async def test_the_demo_runs_unchanged(polybus_url: str) -> None:
    lines: list[str] = []
    assert await run_demo(polybus_url, out=lines.append, timeout=60) == 0, "\n".join(lines)
    assert lines[-1].endswith("billed 5/5, e-mailed 5/5, order #3 billed on attempt 2: OK")
