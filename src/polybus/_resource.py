"""``AsyncResource``: the open / use / close life cycle shared by brokers, producers and consumers.

Opening is lazy and happens once (on ``async with`` or first use); ``aclose()`` is idempotent;
a closed resource refuses reuse with :class:`~polybus.ClosedError`. Imports only ``polybus._errors``.
"""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Self

from polybus._errors import ClosedError

__all__ = ["AsyncResource"]


class AsyncResource:
    """Base for everything polybus opens and closes."""

    _opened: bool = False
    _closed: bool = False
    _open_lock: asyncio.Lock | None = None

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    @property
    def closed(self) -> bool:
        """True once ``aclose()`` was called."""
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError(f"{self!r} is closed; create a new one")

    async def open(self) -> None:
        """Open the resource (connect, create the group...). Called by ``async with`` or on first use."""
        self._check_open()
        if self._opened:
            return
        if self._open_lock is None:
            self._open_lock = asyncio.Lock()
        async with self._open_lock:
            if not self._opened:
                await self._open()
                self._opened = True

    async def aclose(self) -> None:
        """Release the resource. Idempotent: a second call does nothing."""
        if self._closed:
            return
        self._closed = True
        if self._opened:
            await self._aclose()

    async def _open(self) -> None:
        """Subclasses: acquire what the resource needs."""

    async def _aclose(self) -> None:
        """Subclasses: release it. Runs once, and only if ``_open`` succeeded."""
