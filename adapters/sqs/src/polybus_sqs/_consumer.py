"""``SqsConsumer``: a member of a group, i.e. a reader of the group's SQS queue.

- Fetch: ``ReceiveMessage`` of up to 10 (bounded by prefetch), long-polling within the timeout.
- ack: ``DeleteMessageBatch`` of up to 10; the core coalesces the acks (an ack is only ever queued
  after its handler called ``ack()``) and hands them to ``_ack_batch`` after ``ack_linger`` seconds
  (or at once when ``ack_batch_size`` are waiting: then the ack that completes it waits for them),
  and on close; ``ack()`` itself never waits for SQS in between.
- nack(delay): ``ChangeMessageVisibility`` to ``delay`` (0 without one): nothing else waits.
- reject: delete, or with ``dead_letter_after`` set, copy to the group's dead-letter queue, then delete.
- attempt: ``ApproximateReceiveCount``. Held messages (buffered or handed out, not settled) have
  their visibility extended before it runs out, so a long handler is not redelivered meanwhile.
- Closing hands held messages back (visibility 0); a killed process's come back on their own when
  their visibility timeout expires.
- A transient failure of ``ReceiveMessage`` is waited out with the settings' ``reconnect`` policy
  (the core's ``Outage``); the fetch raises once the policy gives up.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
from typing import TYPE_CHECKING, Any

from polybus import NotFoundError, PolybusError
from polybus.adapter import Consumer, Delivery, Outage, Outcome
from polybus_sqs import _topology, _wire
from polybus_sqs._errors import TransientBrokerError, error_code

if TYPE_CHECKING:
    from polybus_sqs._broker import SqsBroker, SqsTopic

__all__ = ["SqsConsumer"]

log = logging.getLogger("polybus.sqs")
BATCH = 10
ENTRY_RETRIES = 5
MAX_VISIBILITY = 43200
_SYSTEM_ATTRIBUTES = ["ApproximateReceiveCount", "SentTimestamp", "MessageGroupId"]


@dataclasses.dataclass(eq=False)
class Receipt:
    """``Delivery.native`` of this adapter: what SQS needs to settle the message."""

    handle: str
    message_id: str
    visible_until: float
    body: str
    attributes: dict[str, Any]
    group_id: str | None


class SqsConsumer(Consumer):
    """Reads the group's SQS queue (a temporary queue when ``group`` is ``None``)."""

    topic: SqsTopic
    queue: _topology.Queue

    def __init__(self, topic: SqsTopic, group: str | None, prefetch: int) -> None:
        super().__init__(topic, group, prefetch)
        self.ack_linger = topic.broker.settings.ack_linger
        self._keeper: asyncio.Task[None] | None = None
        self._late: set[asyncio.Task[None]] = set()  # hand-backs of cancelled fetches' messages
        self._outage = Outage(topic.broker.reconnect, f"receiving from topic {topic.name!r}")
        self.ack_failures = 0
        """Acks that SQS refused for good (their messages will be redelivered)."""

    @property
    def _broker(self) -> SqsBroker:
        return self.topic.broker

    async def _open(self) -> None:
        broker = self._broker
        key = (self.topic.name, self.group)
        queue = broker._queues.get(key) if self.group is not None else None
        if queue is None:
            arn = broker._topic_arns.get(self.topic.name) or self.topic.arn
            queue = await _topology.ensure_queue(broker, self.topic.name, arn, self.group)
            if self.group is not None:
                broker._queues[key] = queue
        self.queue = queue
        self._keeper = asyncio.get_running_loop().create_task(self._keep_visible())

    # -- receiving ----------------------------------------------------------------------------

    async def _fetch(self, max_messages: int, timeout: float) -> list[Delivery]:
        deadline = time.monotonic() + timeout
        while True:
            if not await self._outage.ready(deadline):  # backing off, past the deadline
                return []
            started = time.monotonic()
            remaining = deadline - started
            try:
                future = self._broker.submit(
                    "sqs",
                    "receive_message",
                    receive=True,
                    QueueUrl=self.queue.url,
                    MaxNumberOfMessages=max(1, min(BATCH, max_messages)),
                    WaitTimeSeconds=min(20, max(0, int(remaining + 0.05))),
                    MessageAttributeNames=["All"],
                    MessageSystemAttributeNames=_SYSTEM_ATTRIBUTES,
                    VisibilityTimeout=self._broker.settings.visibility_timeout,
                )
                # shielded: a cancelled receive() leaves the call running; its messages are handed back
                reply = await asyncio.shield(future)
            except asyncio.CancelledError:
                future.add_done_callback(self._hand_back_late)
                raise
            except Exception as exc:
                error = self._broker.failure(exc, "sqs receive_message")
                error.__cause__ = exc
                if not isinstance(error, TransientBrokerError):
                    raise error from exc
                self._outage.failed(error)  # re-raises it once the reconnect policy gives up
                continue
            self._outage.ended()
            messages = reply.get("Messages") or []
            if messages:
                return [self._delivery(m, started) for m in messages]
            remaining = deadline - time.monotonic()
            if remaining <= 0.01 or self.closed:
                return []
            await asyncio.sleep(min(remaining, 0.1))  # short polls when less than a second is left

    def _hand_back_late(self, future: asyncio.Future[dict[str, Any]]) -> None:
        """The reply of a fetch whose receive() was cancelled: make its messages visible again now."""
        if future.cancelled() or future.exception() is not None:
            return  # nothing was received (an error here is the next fetch's business)
        messages = future.result().get("Messages") or []
        if messages:
            receipts = [Receipt(m["ReceiptHandle"], m["MessageId"], 0.0, "", {}, None) for m in messages]
            task = asyncio.get_running_loop().create_task(self._make_visible(receipts))
            self._late.add(task)
            task.add_done_callback(self._late.discard)

    def _delivery(self, m: dict[str, Any], started: float) -> Delivery:
        system = m.get("Attributes") or {}
        raw_attributes = m.get("MessageAttributes") or {}
        body, headers, key, polybus_id = _wire.decode(m["Body"], _wire.decode_attributes(raw_attributes))
        if key is None and polybus_id is None:
            key = system.get("MessageGroupId")
        sent = int(system.get("SentTimestamp") or 0) / 1000 or time.time()
        receipt = Receipt(
            handle=m["ReceiptHandle"],
            message_id=m["MessageId"],
            visible_until=started + self._broker.settings.visibility_timeout,
            body=m["Body"],
            attributes=raw_attributes,
            group_id=system.get("MessageGroupId"),
        )
        return Delivery(
            self,
            id=polybus_id or m["MessageId"],
            topic=self.topic.name,
            body=body,
            headers=headers,
            key=key,
            timestamp=sent,
            attempt=int(system.get("ApproximateReceiveCount") or 1),
            native=receipt,
        )

    # -- settling -----------------------------------------------------------------------------

    async def _settle_native(self, delivery: Delivery, outcome: Outcome, delay: float | None) -> None:
        receipt: Receipt = delivery.native
        if outcome is Outcome.NACK:
            seconds = 0 if not delay else min(MAX_VISIBILITY, math.ceil(delay))
            try:
                await self._broker.call(
                    "sqs",
                    "change_message_visibility",
                    QueueUrl=self.queue.url,
                    ReceiptHandle=receipt.handle,
                    VisibilityTimeout=seconds,
                )
            except PolybusError as exc:
                if error_code(exc.__cause__ or exc) not in ("ReceiptHandleIsInvalid", "MessageNotInflight"):
                    raise
                log.warning("nack of %s came too late (%s): it is redelivered anyway", delivery.id, exc)
            return
        if outcome is Outcome.REJECT and self.queue.dlq_url is not None:
            await self._dead_letter(receipt)
        await self._batch("delete_message_batch", [receipt], {})  # a reject (acks come to _ack_batch)

    async def _ack_batch(self, deliveries: list[Delivery]) -> None:
        receipts: list[Receipt] = [d.native for d in deliveries]
        for start in range(0, len(receipts), BATCH):
            chunk = receipts[start : start + BATCH]
            try:
                await self._batch("delete_message_batch", chunk, {})
            except PolybusError as exc:
                self.ack_failures += len(chunk)
                log.warning(
                    "deleting %d acked messages failed (they will be redelivered): %s", len(chunk), exc
                )

    async def _dead_letter(self, receipt: Receipt) -> None:
        attributes = {
            name: {k: v for k, v in value.items() if k in ("DataType", "StringValue", "BinaryValue")}
            for name, value in receipt.attributes.items()
        }
        params: dict[str, Any] = {"QueueUrl": self.queue.dlq_url, "MessageBody": receipt.body}
        if attributes:
            params["MessageAttributes"] = attributes
        if self._broker.settings.fifo:
            params["MessageGroupId"] = receipt.group_id or receipt.message_id
            params["MessageDeduplicationId"] = receipt.message_id
        await self._broker.call("sqs", "send_message", **params)

    async def _batch(self, operation: str, receipts: list[Receipt], extra: dict[str, Any]) -> None:
        """Run a batch call on ``receipts``; retry entries that failed on the server's side only."""
        pending = dict(enumerate(receipts))
        for tries in range(ENTRY_RETRIES + 1):
            entries = [{"Id": str(i), "ReceiptHandle": r.handle, **extra} for i, r in pending.items()]
            reply = await self._broker.call("sqs", operation, QueueUrl=self.queue.url, Entries=entries)
            retry: dict[int, Receipt] = {}
            for failure in reply.get("Failed") or []:
                index = int(failure["Id"])
                if failure.get("SenderFault") or tries == ENTRY_RETRIES:
                    if operation == "delete_message_batch":
                        self.ack_failures += 1
                    log.warning(
                        "%s refused %s (%s: %s)",
                        operation,
                        pending[index].message_id,
                        failure.get("Code"),
                        failure.get("Message"),
                    )
                else:
                    retry[index] = pending[index]
            if not retry:
                return
            pending = retry
            await asyncio.sleep(0.05 * 2**tries)

    # -- visibility ---------------------------------------------------------------------------

    async def _keep_visible(self) -> None:
        """Extend the visibility of held messages before it runs out (long handlers, deep buffers)."""
        timeout = self._broker.settings.visibility_timeout
        while True:
            await asyncio.sleep(max(0.2, timeout / 4))
            now = time.monotonic()
            due = [d.native for d in self.held() if d.native.visible_until - now < timeout / 2]
            for start in range(0, len(due), BATCH):
                chunk = due[start : start + BATCH]
                try:
                    await self._batch(
                        "change_message_visibility_batch", chunk, {"VisibilityTimeout": timeout}
                    )
                except PolybusError as exc:
                    log.warning("extending the visibility of %d messages failed: %s", len(chunk), exc)
                    continue
                for receipt in chunk:
                    receipt.visible_until = now + timeout

    # -- closing ------------------------------------------------------------------------------

    async def _make_visible(self, receipts: list[Receipt]) -> None:
        """Hand ``receipts`` back to the group now (visibility 0; on failure, when it runs out)."""
        for start in range(0, len(receipts), BATCH):
            chunk = receipts[start : start + BATCH]
            try:
                await self._batch("change_message_visibility_batch", chunk, {"VisibilityTimeout": 0})
            except PolybusError as exc:
                log.warning(
                    "handing back %d messages failed (they return after their timeout): %s", len(chunk), exc
                )

    async def _release(self, deliveries: list[Delivery]) -> None:
        if self._keeper is not None:
            self._keeper.cancel()
        if self._late:
            await asyncio.gather(*self._late, return_exceptions=True)
        await self._make_visible([d.native for d in deliveries])
        if self.group is None:
            try:
                await _topology.remove_queue(self._broker, self.queue)
            except (NotFoundError, PolybusError) as exc:
                log.warning("removing temporary queue %s failed: %s", self.queue.name, exc)
