"""Retry with backoff, then dead letters: :class:`RetryPolicy` and the :func:`retry` middleware.

A failed delivery is ``nack``-ed with the policy's delay, so **the broker holds the message** until
it is due and the handler slot is free at once for the next one (no sleeping in the handler, no
stream held up behind a poison message). ``Delivery.attempt`` (counted by the broker) says when to
give up: at ``max_attempts``, or at once for an exception that can never succeed
(:class:`polybus.DecodeError`, :class:`pydantic.ValidationError`, the policy's ``give_up_on``). Giving
up sends the message to its group's dead-letter topic (``polybus_patterns._dead_letters``), then acks
it. A request (a delivery with a ``polybus-reply-to`` header) that is given up on is dead-lettered
and acked too, then the exception is raised again so that the App (or ``run_consumer``) sends the
requester its error reply: the runner never settles a delivery that is settled already.
Imports ``polybus`` (and pydantic, which polybus depends on) only.
"""

from __future__ import annotations

import dataclasses
import logging
import random
from collections.abc import Iterable

import pydantic

import polybus
from polybus import ConfigurationError, DecodeError, Delivery, Handler, Middleware, PolybusError
from polybus_patterns._dead_letter import DeadLetterSender

__all__ = ["RetryPolicy", "retry"]

log = logging.getLogger("polybus.patterns")

NEVER_RETRIED: tuple[type[BaseException], ...] = (DecodeError, pydantic.ValidationError)
"""Exceptions that fail the same way on every attempt: dead-lettered at once."""


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """When to retry a failed delivery, and how long the broker holds it in between.

    ``max_attempts`` counts deliveries, the first one included (``1``: never retried). After attempt
    ``n`` failed, the next comes :meth:`delay` (``n``) seconds later: ``first_delay`` times
    ``multiplier ** (n - 1)``, capped at ``max_delay``, spread by ``jitter`` (a fraction: 0.1 means
    within 10 % either way, so that failures that happened together do not come back together).
    Exceptions in ``give_up_on`` (as ``DecodeError`` and pydantic's ``ValidationError``) are never retried.
    """

    max_attempts: int = 5
    first_delay: float = 1.0
    multiplier: float = 2.0
    max_delay: float = 300.0
    jitter: float = 0.1
    give_up_on: tuple[type[BaseException], ...] = ()

    def __post_init__(self) -> None:
        give_up_on: object = self.give_up_on  # a single type is accepted too
        if isinstance(give_up_on, type):
            give_up_on = (give_up_on,)
        elif isinstance(give_up_on, Iterable):
            give_up_on = tuple(give_up_on)
        if not isinstance(give_up_on, tuple) or not all(
            isinstance(t, type) and issubclass(t, BaseException) for t in give_up_on
        ):
            raise ConfigurationError(f"give_up_on must be exception types, got {self.give_up_on!r}")
        object.__setattr__(self, "give_up_on", give_up_on)
        if self.max_attempts.__class__ is not int or self.max_attempts < 1:
            raise ConfigurationError(f"max_attempts must be a whole number >= 1, got {self.max_attempts!r}")
        for name in ("first_delay", "max_delay"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or value < 0:
                raise ConfigurationError(f"{name} must be a number of seconds >= 0, got {value!r}")
        if not isinstance(self.multiplier, int | float) or self.multiplier < 1:
            raise ConfigurationError(f"multiplier must be >= 1, got {self.multiplier!r}")
        if not isinstance(self.jitter, int | float) or not 0 <= self.jitter <= 1:
            raise ConfigurationError(f"jitter must be a fraction from 0 to 1, got {self.jitter!r}")

    def delay(self, attempt: int) -> float:
        """Seconds to wait after attempt ``attempt`` (1 = the first delivery) failed."""
        try:
            base = self.first_delay * self.multiplier ** max(0, attempt - 1)
        except OverflowError:
            base = self.max_delay
        base = min(base, self.max_delay)
        if self.jitter:
            base *= 1 + self.jitter * random.uniform(-1.0, 1.0)
        return max(0.0, min(base, self.max_delay))

    def retryable(self, exc: BaseException) -> bool:
        """False for the exceptions that are never retried: decode and validation errors, ``give_up_on``."""
        return not isinstance(exc, NEVER_RETRIED + self.give_up_on)


def retry(policy: RetryPolicy) -> Middleware:
    """Middleware: retry a failing delivery with ``policy``'s backoff (``nack(delay)``), then dead-letter it.

    Use it in ``polybus.App(middlewares=[retry(RetryPolicy(...)), ...])`` or with
    ``polybus.compose``. A delivery the handler settled itself is left alone. Giving up sends the
    message (id, body, key and headers kept, ``polybus-dlq-*`` headers added) to the dead-letter
    topic of the delivery's group and acks it; see :class:`~polybus_patterns.DeadLetters` to read,
    replay or purge them. If the dead letter cannot be sent, the delivery is nacked with the policy's
    longest delay instead: it is never lost. A group-less listener's delivery has no group to keep
    its dead letters: it is rejected (dropped) with the error in the log.
    """
    sender = DeadLetterSender()

    def middleware(handler: Handler) -> Handler:
        async def with_retry(delivery: Delivery) -> None:
            try:
                await handler(delivery)
            except Exception as exc:
                if delivery.outcome is not None:  # the handler settled it: its own decision
                    raise
                attempt = delivery.attempt
                if attempt < policy.max_attempts and policy.retryable(exc):
                    delay = policy.delay(attempt)
                    log.warning(
                        "attempt %d of %d failed for %r (%s: %s); retrying in %.3gs",
                        attempt,
                        policy.max_attempts,
                        delivery,
                        type(exc).__name__,
                        exc,
                        delay,
                    )
                    await delivery.nack(delay)
                    return
                given_up = await _give_up(delivery, exc, attempt, sender, policy)
                if given_up and polybus.REPLY_TO_HEADER in delivery.headers:
                    raise  # settled: the runner only sends the requester its error reply

        return with_retry

    return middleware


async def _give_up(
    delivery: Delivery, exc: Exception, attempt: int, sender: DeadLetterSender, policy: RetryPolicy
) -> bool:
    """Dead-letter and ack ``delivery`` (True), or nack it for later when that cannot be done (False)."""
    group = delivery.group
    why = "cannot be retried" if not policy.retryable(exc) else f"failed {attempt} times"
    if group is None:
        log.error("giving up on %r (%s), a listener's: dropped", delivery, why, exc_info=exc)
        await delivery.reject()
        return True
    try:
        await sender.send(delivery, group, exc)
    except PolybusError as send_error:
        log.error(
            "could not dead-letter %r (%s): %s; redelivering in %ss",
            delivery,
            why,
            send_error,
            policy.max_delay,
        )
        await delivery.nack(policy.max_delay)
        return False
    # one line: the traceback travels in the dead letter's polybus-dlq-traceback header
    log.error("dead-lettered %r of group %r (%s): %s: %s", delivery, group, why, type(exc).__name__, exc)
    await delivery.ack()
    return True
