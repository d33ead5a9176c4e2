"""What both kinds of redis consumer share: their own connection for blocking reads.

:class:`BlockingLink` holds one connection outside the pool, learns its ``CLIENT ID`` on every
(re)connect, and lets :meth:`~BlockingLink.interrupt` end a blocked ``XREAD[GROUP]`` at once with
``CLIENT UNBLOCK`` (when the consumer closes, or when the call is cancelled: see ``_connection``).
Imports redis-py's exceptions and this adapter's ``_connection`` (``_broker`` for typing only).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from redis.exceptions import ResponseError

from polybus_redis._connection import Command, Reply

if TYPE_CHECKING:
    from polybus_redis._broker import RedisBroker

__all__ = ["BlockingLink"]


class BlockingLink:
    """A consumer's own connection, for reads that may block for up to a second.

    A call cancelled while its reply is awaited does not drop the connection: the link ends the
    blocking read (``CLIENT UNBLOCK``), reads the reply, and keeps it for :meth:`take_kept`, so
    that the entries Redis delivered meanwhile are not stranded in the consumer's pending list.
    """

    def __init__(self, broker: RedisBroker) -> None:
        self.broker = broker
        self._conn = broker.pool.make_connection()  # type: ignore[no-untyped-call]
        self._client_id: int | None = None
        self._busy = False
        self._kept: list[Reply] | None = None

    async def call(self, commands: Sequence[Command], *, what: str) -> list[Reply]:
        """Run ``commands`` pipelined on this connection; error replies raise (translated)."""
        if not self._conn.is_connected:
            self._client_id = None
            (client_id,) = await self.broker.run_on(self._conn, [["CLIENT", "ID"]], what=what)
            self._client_id = int(client_id)
        self._busy = True
        try:
            return await self.broker.run_on(self._conn, list(commands), what=what, finisher=self)
        finally:
            self._busy = False

    def take_kept(self) -> list[Reply] | None:
        """The replies of the last call, if it was cancelled after Redis answered it (else ``None``)."""
        kept, self._kept = self._kept, None
        if kept is None or any(isinstance(r, ResponseError) for r in kept):
            return None
        return kept

    async def unblock(self) -> None:
        """:class:`~polybus_redis._connection.Finisher`: end the blocked read of a cancelled call."""
        if self._client_id is not None:
            await self.broker.execute(
                [["CLIENT", "UNBLOCK", self._client_id]], what="unblock a cancelled read", retry=False
            )

    def keep(self, replies: list[Reply]) -> None:
        """:class:`~polybus_redis._connection.Finisher`: hold the replies of a cancelled call."""
        self._kept = replies

    def interrupt(self) -> None:
        """End a blocking read under way (it returns no entries)."""
        if self._busy and self._client_id is not None:
            self.broker.spawn([["CLIENT", "UNBLOCK", self._client_id]], "unblock a closing consumer")

    async def aclose(self) -> None:
        """Close the connection."""
        await self._conn.disconnect()
