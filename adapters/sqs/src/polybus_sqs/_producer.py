"""``SqsProducer`` and the per-topic publisher that coalesces sends into SNS ``PublishBatch`` calls.

Sends made in the same turn of the event loop, by any producer of the topic, share batches of up
to 10 entries (and at most ``max_message_size`` bytes); up to ``publish_window`` batches are in
flight at once (one on FIFO topics, to keep per-key order). A send returns when SNS confirmed its
entry. Entries that fail on the server's side are retried alone (the others are not sent twice);
entries SNS refuses raise :class:`~polybus.PublishError`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import TYPE_CHECKING, Any

from polybus import (
    RESEND_HEADER,
    Message,
    MessageTooLargeError,
    NotFoundError,
    PolybusError,
    Producer,
    PublishError,
)
from polybus_sqs import _wire

if TYPE_CHECKING:
    from polybus_sqs._broker import SqsBroker, SqsTopic

__all__ = ["SqsProducer", "TopicPublisher"]

log = logging.getLogger("polybus.sqs")
BATCH = 10
ENTRY_RETRIES = 5


@dataclasses.dataclass(eq=False)
class _Entry:
    message: Message
    body: str
    attributes: dict[str, dict[str, str]]
    size: int
    future: asyncio.Future[str]
    tries: int = 0


class TopicPublisher:
    """Batches the sends of every producer of one topic of one broker."""

    def __init__(self, broker: SqsBroker, topic: str) -> None:
        self.broker = broker
        self.topic = topic
        self._pending: list[_Entry] = []
        self._scheduled = False
        self._window = asyncio.Semaphore(1 if broker.settings.fifo else broker.settings.publish_window)
        self._tasks: set[asyncio.Task[None]] = set()

    def submit(self, messages: list[Message]) -> list[asyncio.Future[str]]:
        """Queue ``messages`` (checked for size first); their futures resolve to ids once confirmed."""
        loop = asyncio.get_running_loop()
        limit = self.broker.settings.max_message_size
        entries = []
        for message in messages:
            body, attributes, size = _wire.encode(message)
            if size > limit:  # what SNS counts: base64 bodies and attributes included
                raise MessageTooLargeError(size, limit, topic=self.topic)
            entries.append(_Entry(message, body, attributes, size, loop.create_future()))
        self._pending.extend(entries)
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._drain)
        return [e.future for e in entries]

    def _drain(self) -> None:
        self._scheduled = False
        pending, self._pending = self._pending, []
        limit = self.broker.settings.max_message_size
        batch: list[_Entry] = []
        size = 0
        for entry in pending:
            if batch and (len(batch) == BATCH or size + entry.size > limit):
                self._start(batch)
                batch, size = [], 0
            batch.append(entry)
            size += entry.size
        if batch:
            self._start(batch)

    def _start(self, batch: list[_Entry]) -> None:
        task = asyncio.get_running_loop().create_task(self._send(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[_Entry]) -> None:
        try:
            while batch:
                async with self._window:
                    batch = await self._send_once(batch)
                if batch:
                    await asyncio.sleep(0.05 * 2 ** min(batch[0].tries, 5))
        except BaseException as exc:
            error = exc if isinstance(exc, PolybusError) else PublishError(f"publish failed: {exc!r}")
            for entry in batch:
                if not entry.future.done():
                    entry.future.set_exception(error)
            if not isinstance(exc, Exception):
                raise

    async def _send_once(self, batch: list[_Entry]) -> list[_Entry]:
        """Send one PublishBatch; settle the entries it settles, return those to retry."""
        fifo = self.broker.settings.fifo
        request: list[dict[str, Any]] = []
        for i, entry in enumerate(batch):
            item: dict[str, Any] = {
                "Id": str(i),
                "Message": entry.body,
                "MessageAttributes": entry.attributes,
            }
            if fifo:
                item["MessageGroupId"] = entry.message.key or entry.message.id
                resend = entry.message.headers.get(RESEND_HEADER)  # a deliberate re-send: not a duplicate
                item["MessageDeduplicationId"] = entry.message.id + (f"-{resend}" if resend else "")
            request.append(item)
        arn = self.broker._topic_arns.get(self.topic)
        if arn is None:
            raise NotFoundError(f"topic {self.topic!r} was deleted")
        reply = await self.broker.call(
            "sns", "publish_batch", TopicArn=arn, PublishBatchRequestEntries=request, error=PublishError
        )
        ok = {item["Id"]: item for item in reply.get("Successful", [])}
        failed = {item["Id"]: item for item in reply.get("Failed", [])}
        retry = []
        for i, entry in enumerate(batch):
            if str(i) in ok:
                entry.future.set_result(entry.message.id)
                continue
            # an entry in neither list (seen with emulators) is treated as a server-side failure
            failure = failed.get(str(i), {"Code": "missing", "Message": "no result", "SenderFault": False})
            what = f"SNS refused message {entry.message.id} ({failure.get('Code')}: {failure.get('Message')})"
            if failure.get("SenderFault") or entry.tries >= ENTRY_RETRIES:
                entry.future.set_exception(PublishError(what))
            else:
                entry.tries += 1
                log.warning("%s; retrying it", what)
                retry.append(entry)
        return retry


class SqsProducer(Producer):
    """Sends to an SNS topic; every group queue subscribed to it receives each message."""

    topic: SqsTopic

    async def _publish(self, messages: list[Message]) -> list[str]:
        broker = self.topic.broker
        publisher = broker._publishers.get(self.topic.name)
        if publisher is None:
            publisher = broker._publishers[self.topic.name] = TopicPublisher(broker, self.topic.name)
        futures = publisher.submit(messages)
        await asyncio.wait(futures)
        ids: list[str] = []
        error: BaseException | None = None
        for future in futures:
            exc = future.exception()
            if exc is not None:
                error = error or exc
            else:
                ids.append(future.result())
        if error is not None:
            raise error
        return ids
