"""Fresh names for tests: every test uses topics and groups no other test (or run) has used."""

from __future__ import annotations

import uuid

__all__ = ["unique_name"]


def unique_name(prefix: str = "t") -> str:
    """``prefix`` plus 12 random hex digits: a portable topic or group name."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"
