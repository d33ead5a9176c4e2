"""``NatsProducer``: publishes through JetStream, pipelined, and returns once every message is stored.

Each message carries ``Nats-Msg-Id``: when a confirmation does not come (a lost connection), the
unconfirmed messages are sent again under the settings' :class:`~polybus.ReconnectPolicy`, and
the server drops the copies it already stored. A send that is still unconfirmed when the policy
gives up raises :class:`~polybus.PublishError`; nothing vanishes silently.
Imports polybus core, nats-py and this package's modules.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import nats.errors
import nats.js.errors

from polybus import MessageTooLargeError, NotFoundError, PublishError
from polybus.adapter import Message, Producer
from polybus_nats._errors import translate
from polybus_nats._wire import HEADROOM, wire_headers, wire_size

if TYPE_CHECKING:
    from polybus_nats._broker import NatsTopic

__all__ = ["NatsProducer"]

log = logging.getLogger("polybus.nats")

_RETRIABLE = (
    nats.errors.TimeoutError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.StaleConnectionError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.FlushTimeoutError,
    nats.js.errors.TooManyStalledMsgsError,
    nats.js.errors.NoStreamResponseError,
    asyncio.TimeoutError,
    OSError,
)


class _Unconfirmed(Exception):
    """Some messages got no confirmation (yet); they are sent again with the same ids."""


class NatsProducer(Producer):
    """Sends to one topic's stream; ``send_many`` pipelines up to ``max_pending_publishes`` at once."""

    topic: NatsTopic

    async def _publish(self, messages: list[Message]) -> list[str]:
        broker = self.topic.broker
        limit = broker.nc.max_payload
        prepared: list[tuple[bytes, dict[str, str]]] = []
        for message in messages:
            headers = wire_headers(message)
            # The core already bounded message.size by max_payload - HEADROOM; only many headers
            # or a long key can make the wire size (header lines, id, key) exceed max_payload.
            if 4 * len(headers) + len(message.key or "") > HEADROOM // 2:
                size = wire_size(message.body, headers)
                if size > limit:
                    raise MessageTooLargeError(size, limit, topic=self.topic.name)
            prepared.append((message.body, headers))
        pending = list(range(len(prepared)))
        last_error: list[BaseException] = []

        async def attempt() -> None:
            nonlocal pending
            pending = await self._send_window(prepared, pending, last_error)
            if pending:
                raise _Unconfirmed()

        try:
            await broker.settings.reconnect.run(attempt, retry_on=(_Unconfirmed,), what="publish")
        except _Unconfirmed:
            cause = last_error[-1] if last_error else None
            reason = translate(cause, "last error") if cause is not None else "no confirmation"
            raise PublishError(
                f"{len(pending)} of {len(messages)} messages to topic {self.topic.name!r} were not confirmed "
                f"by NATS ({reason}); they may or may not be stored: resend them (the ids de-duplicate)"
            ) from cause
        return [m.id for m in messages]

    async def _send_window(
        self, prepared: list[tuple[bytes, dict[str, str]]], indices: list[int], errors: list[BaseException]
    ) -> list[int]:
        """Publish ``indices`` pipelined; return those not confirmed (worth retrying)."""
        broker = self.topic.broker
        timeout = broker.settings.publish_timeout
        unconfirmed, answered, failure = await broker.publisher.publish(
            self.topic.subject,
            prepared,
            indices,
            timeout=timeout,
            window=broker.settings.max_pending_publishes,
        )
        if failure is not None:
            if not isinstance(failure, _RETRIABLE):
                raise translate(failure, f"publish to topic {self.topic.name!r}") from failure
            errors.append(failure)
        no_stream = False
        failed: list[int] = []
        for i, problem in answered.items():
            if isinstance(problem, nats.js.errors.NoStreamResponseError):
                no_stream = True
                errors.append(problem)
                failed.append(i)
            else:
                raise translate(problem, f"publish to topic {self.topic.name!r}") from problem
        if unconfirmed and not errors:
            errors.append(TimeoutError(f"no confirmation within {timeout}s"))
        if no_stream:
            await self._check_stream()
        return failed + unconfirmed

    async def _check_stream(self) -> None:
        """'No responders' means a deleted stream, or a server still starting: raise for the first."""
        try:
            await self.topic.broker.js.stream_info(self.topic.stream)
        except nats.js.errors.NotFoundError as exc:
            raise NotFoundError(f"topic {self.topic.name!r} does not exist (its stream was deleted)") from exc
        except (TimeoutError, nats.errors.Error, OSError) as exc:
            log.debug("stream check failed, retrying the send: %s", translate(exc, "stream check"))
