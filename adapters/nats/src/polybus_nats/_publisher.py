"""``Publisher``: pipelined JetStream publishes on one connection, each ack matched by its reply subject.

nats-py's ``publish_async`` makes a future, a random token and a parsed ``PubAck`` object per
message; here a send_many is one batch: message ``i`` of batch ``b`` is published with the reply
subject ``<inbox>.b.i``, and the server's answer just removes ``i`` from the batch's waiting set.
Only answers that carry an error are parsed. Imports nats-py only.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

__all__ = ["Publisher"]


class _Batch:
    __slots__ = ("errors", "event", "low_water", "waiting")

    def __init__(self) -> None:
        self.waiting: set[int] = set()
        self.errors: dict[int, BaseException] = {}
        self.event = asyncio.Event()
        self.low_water = 0


class Publisher:
    """Publishes batches to JetStream with up to ``window`` unconfirmed messages per batch."""

    def __init__(self, nc: NATS) -> None:
        self._nc = nc
        self._prefix = ""
        self._sub: Subscription | None = None
        self._batches: dict[int, _Batch] = {}
        self._ids = itertools.count(1)
        self._lock = asyncio.Lock()

    async def _start(self) -> None:
        async with self._lock:
            if self._sub is None:
                inbox = self._nc.new_inbox()
                self._prefix = f"{inbox}."
                self._sub = await self._nc.subscribe(
                    f"{inbox}.>", cb=self._on_reply, pending_msgs_limit=0, pending_bytes_limit=0
                )

    async def _on_reply(self, msg: Msg) -> None:
        batch_id, _, index = msg.subject[len(self._prefix) :].partition(".")
        batch = self._batches.get(int(batch_id))
        if batch is None:
            return  # an answer that came after its batch gave up waiting
        i = int(index)
        if i not in batch.waiting:
            return
        if msg.headers and msg.headers.get("Status") == "503":
            batch.errors[i] = nats.js.errors.NoStreamResponseError()
        elif b'"error"' in msg.data:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                batch.errors[i] = nats.js.errors.APIError.from_error(json.loads(msg.data)["error"])
        batch.waiting.discard(i)
        if len(batch.waiting) <= batch.low_water:
            batch.event.set()

    async def publish(
        self,
        subject: str,
        items: list[tuple[bytes, dict[str, str]]],
        indices: list[int],
        *,
        timeout: float,
        window: int,
    ) -> tuple[list[int], dict[int, BaseException], BaseException | None]:
        """Publish ``items[i]`` for each of ``indices``; wait up to ``timeout`` s for the acks.

        Returns the indices without an ack (unsent or unanswered), the errors the server answered
        with (by index), and the client error that stopped the sending, if one did.
        """
        if self._sub is None:
            await self._start()
        batch_id = next(self._ids)
        batch = _Batch()
        self._batches[batch_id] = batch
        reply = f"{self._prefix}{batch_id}."
        publish = self._nc.publish
        sent = 0
        failure: BaseException | None = None
        try:
            for i in indices:
                if len(batch.waiting) >= window and not await self._drain(batch, window // 2, timeout):
                    break
                batch.waiting.add(i)  # before publishing: the ack may come while publish() yields
                try:
                    await publish(subject, items[i][0], reply=f"{reply}{i}", headers=items[i][1])
                except (nats.errors.Error, OSError) as exc:
                    batch.waiting.discard(i)
                    failure = exc
                    break
                sent += 1
            await self._drain(batch, 0, timeout)
        finally:
            del self._batches[batch_id]
        return [*batch.waiting, *indices[sent:]], batch.errors, failure

    @staticmethod
    async def _drain(batch: _Batch, low_water: int, timeout: float) -> bool:
        """Wait until at most ``low_water`` acks are outstanding; False on timeout."""
        batch.low_water = low_water
        while len(batch.waiting) > low_water:
            batch.event.clear()
            try:
                async with asyncio.timeout(timeout):  # not wait_for: on 3.11 it can swallow a cancel
                    await batch.event.wait()
            except TimeoutError:
                return False
        return True

    async def aclose(self) -> None:
        """Stop listening for acks."""
        if self._sub is not None:
            with contextlib.suppress(nats.errors.Error):
                await self._sub.unsubscribe()
            self._sub = None
