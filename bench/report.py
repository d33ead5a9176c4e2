"""Summarising benchmark cycles: the median of the repetitions, a text table, the JSON document."""

from __future__ import annotations

import statistics
from typing import Any

__all__ = ["METRICS", "median_of", "table"]

METRICS = [
    ("publish_rate", "publish msg/s (confirmed)", True),
    ("consume_rate", "consume msg/s (acked)", True),
    ("p50_ms", "round trip p50 ms", False),
    ("p99_ms", "round trip p99 ms", False),
    ("consume_peak_rss_mib", "consume peak RSS MiB", False),
]
"""(key, label, higher is better)."""


def median_of(cycles: list[dict[str, Any]]) -> dict[str, Any]:
    """Per metric, the median over the cycles that produced it; errors collected."""
    summary: dict[str, Any] = {"cycles": len(cycles)}
    for key, _label, _higher in METRICS:
        values = [c[key] for c in cycles if c.get(key) is not None]
        summary[key] = statistics.median(values) if values else None
    summary["errors"] = sorted({c["error"] for c in cycles if c.get("error")})
    return summary


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}"


def table(columns: dict[str, dict[str, Any] | str]) -> str:
    """A text table with a column per driver and, when both exist, the polybus/raw ratio.

    A column given as a string is a reason it has no figures (e.g. "adapter not installed").
    """
    names = list(columns)
    width = 12
    header = f"{'metric':<28}" + "".join(f"{name:>{width}}" for name in names)
    both = all(isinstance(columns.get(n), dict) for n in ("polybus", "raw"))
    if both:
        header += f"{'polybus/raw':>{width}}"
    lines = [header, "-" * len(header)]
    for key, label, _higher in METRICS:
        row = f"{label:<28}"
        for name in names:
            column = columns[name]
            row += f"{_number(column.get(key)) if isinstance(column, dict) else 'n/a':>{width}}"
        if both:
            ours, theirs = columns["polybus"], columns["raw"]
            assert isinstance(ours, dict) and isinstance(theirs, dict)
            a, b = ours.get(key), theirs.get(key)
            row += f"{((a / b if a is not None and b else None) and f'{a / b:.2f}') or '-':>{width}}"
        lines.append(row)
    for name in names:
        column = columns[name]
        if isinstance(column, str):
            lines.append(f"{name}: {column}")
        elif column.get("errors"):
            lines.append(f"{name}: {'; '.join(column['errors'])}")
    return "\n".join(lines)
