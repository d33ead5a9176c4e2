"""``AsyncContext``: ``async with`` for the patterns' resources, opening on entry and closing on exit.

Imports nothing from polybus_patterns.
"""

from __future__ import annotations

from types import TracebackType
from typing import Self

__all__ = ["AsyncContext"]


class AsyncContext:
    """``async with resource``: :meth:`open` on entering, :meth:`aclose` on leaving."""

    async def open(self) -> None:
        """Acquire what the resource needs (nothing, unless a subclass says otherwise)."""

    async def aclose(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
