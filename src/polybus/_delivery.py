"""``Delivery``: one message as a consumer hands it out, with the means to settle it.

A delivery is settled exactly once: ``ack()`` (done), ``nack(delay)`` (redeliver, later if asked)
or ``reject()`` (never redeliver). The consumer that produced it does the broker work.
Imports only ``polybus._errors`` and ``polybus._message``.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any, TypeVar, overload

from polybus._errors import DeliveryStateError
from polybus._message import CONTENT_TYPE, decode_body

if TYPE_CHECKING:
    from polybus._broker import Broker
    from polybus._consumer import Consumer

__all__ = ["Delivery", "Outcome"]

T = TypeVar("T")


class Outcome(enum.Enum):
    """How a delivery was settled."""

    ACK = "ack"
    NACK = "nack"
    REJECT = "reject"


class Delivery:
    """A received message: ``body``, ``headers``, ``key``, ``id``, ``attempt``, and how to settle it.

    ``id`` is stable across redeliveries; ``attempt`` is 1 on the first delivery. ``timestamp`` is
    the send time in seconds since the epoch. ``native`` holds the adapter's own handle.
    """

    __slots__ = (
        "_consumer",
        "attempt",
        "body",
        "headers",
        "id",
        "key",
        "native",
        "outcome",
        "timestamp",
        "topic",
    )

    def __init__(  # positional arguments allowed: adapters build one per message, and keywords cost
        self,
        consumer: Consumer,
        id: str,
        topic: str,
        body: bytes,
        headers: dict[str, str],
        key: str | None,
        timestamp: float,
        attempt: int,
        native: Any = None,
    ) -> None:
        self._consumer = consumer
        self.id = id
        self.topic = topic
        self.body = body
        self.headers = headers
        self.key = key
        self.timestamp = timestamp
        self.attempt = attempt
        self.native = native
        self.outcome: Outcome | None = None

    def __repr__(self) -> str:
        state = self.outcome.value if self.outcome else "unsettled"
        return (
            f"<Delivery id={self.id!r} topic={self.topic!r} attempt={self.attempt} "
            f"size={len(self.body)} {state}>"
        )

    @property
    def group(self) -> str | None:
        """The group this delivery was received in (``None`` for a group-less listener)."""
        return self._consumer.group

    @property
    def broker(self) -> Broker:
        """The broker this delivery came from: what a middleware uses to send elsewhere."""
        return self._consumer.topic.broker

    @property
    def settled(self) -> bool:
        """True once ack, nack or reject was called."""
        return self.outcome is not None

    @property
    def content_type(self) -> str | None:
        """The ``content-type`` header, if the sender set one."""
        return self.headers.get(CONTENT_TYPE)

    def _settle(self, outcome: Outcome) -> None:
        if self.outcome is not None:
            raise DeliveryStateError(f"delivery {self.id!r} was already settled with {self.outcome.value}()")
        self.outcome = outcome

    async def ack(self) -> None:
        """The message was handled: it will not be delivered again to this group."""
        consumer = self._consumer
        consumer._mark_settled(self, Outcome.ACK)
        if consumer._coalesces_acks:
            if consumer._queue_ack(self):  # a whole batch: send it now, not after the burst
                await consumer._send_acks(consumer._take_acks())
        else:
            await consumer._settle_native(self, Outcome.ACK, None)

    async def nack(self, delay: float | None = None) -> None:
        """Handling failed: redeliver to the group, after ``delay`` seconds if given.

        Waiting never holds up the other messages of the topic.
        """
        if delay is not None and delay < 0:
            raise ValueError(f"nack delay must be >= 0 seconds, got {delay}")
        consumer = self._consumer
        consumer._mark_settled(self, Outcome.NACK)
        await consumer._settle_native(self, Outcome.NACK, delay)

    async def reject(self) -> None:
        """The message can never be handled: drop it (or dead-letter it where configured)."""
        consumer = self._consumer
        consumer._mark_settled(self, Outcome.REJECT)
        await consumer._settle_native(self, Outcome.REJECT, None)

    def text(self) -> str:
        """The body decoded as UTF-8."""
        return decode_body(self.body, str)  # type: ignore[no-any-return]

    def json(self) -> Any:
        """The body parsed as JSON; raises :class:`~polybus.DecodeError` if it is not JSON."""
        return decode_body(self.body)

    @overload
    def decode(self, model: type[T]) -> T: ...
    @overload
    def decode(self, model: Any) -> Any: ...
    def decode(self, model: Any) -> Any:
        """The body validated into ``model`` (a pydantic model, or any type pydantic validates)."""
        return decode_body(self.body, model)
