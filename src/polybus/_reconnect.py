"""``ReconnectPolicy``: exponential backoff with jitter, passed to adapters as an object.

Adapters use it to re-establish a lost connection and to retry an operation that failed because
of it; a send that still fails when the policy gives up raises, it never vanishes.
Imports only ``polybus._errors``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

from polybus._errors import BrokerConnectionError

__all__ = ["Outage", "ReconnectPolicy"]

T = TypeVar("T")
log = logging.getLogger("polybus.reconnect")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ReconnectPolicy:
    """How long and how often to retry after a connection failure.

    Delays grow from ``initial`` by ``multiplier`` up to ``maximum``; each is scaled by a random
    factor in ``[1 - jitter, 1]`` so that many clients do not reconnect in lock step. Retrying stops
    after ``max_attempts`` tries or ``give_up_after`` seconds, whichever comes first.
    """

    initial: float = 0.1
    maximum: float = 5.0
    multiplier: float = 2.0
    jitter: float = 0.5
    max_attempts: int | None = None
    give_up_after: float | None = 30.0

    def delays(self) -> Iterator[float]:
        """The successive waits before each retry (endless unless ``max_attempts`` is set)."""
        delay = self.initial
        attempt = 1
        while self.max_attempts is None or attempt < self.max_attempts:
            yield delay * (1 - self.jitter * random.random())
            delay = min(self.maximum, delay * self.multiplier)
            attempt += 1

    async def run(
        self,
        operation: Callable[[], Awaitable[T]],
        *,
        retry_on: tuple[type[BaseException], ...] = (BrokerConnectionError,),
        before_retry: Callable[[BaseException], Awaitable[None]] | None = None,
        what: str = "operation",
    ) -> T:
        """Run ``operation``, retrying on ``retry_on`` with backoff; re-raise when giving up.

        ``before_retry(exc)`` runs before each retry (for example to reconnect).
        """
        started = time.monotonic()
        delays = self.delays()
        while True:
            try:
                return await operation()
            except retry_on as exc:
                delay = next(delays, None)
                if delay is None or (
                    self.give_up_after is not None and time.monotonic() - started + delay > self.give_up_after
                ):
                    raise
                log.warning("%s failed (%s); retrying in %.2fs", what, type(exc).__name__, delay)
                await asyncio.sleep(delay)
                if before_retry is not None:
                    await before_retry(exc)


class Outage:
    """Backoff state of one worker (a consumer's fetch loop, a link) while its connection is down.

    Call :meth:`failed` after each failed try: it returns how long to wait before the next one, or
    re-raises the error once the policy gives up (``max_attempts`` tries or ``give_up_after``
    seconds since the outage began). Call :meth:`ended` after a success: the next failure starts a
    new outage with the first delay again.
    """

    __slots__ = ("_delays", "_since", "next_try", "policy", "what")

    def __init__(self, policy: ReconnectPolicy, what: str = "connection") -> None:
        self.policy = policy
        self.what = what
        self._since: float | None = None
        self._delays: Iterator[float] = iter(())
        self.next_try: float | None = None
        """Monotonic time of the next try while an outage lasts, else ``None``."""

    @property
    def active(self) -> bool:
        """True between a failure and the next success."""
        return self._since is not None

    def ended(self) -> None:
        """A try succeeded: the outage (if any) is over."""
        self._since = self.next_try = None

    def failed(self, exc: BaseException) -> float:
        """Record a failed try; the delay before the next one, or re-raise ``exc`` when giving up."""
        now = time.monotonic()
        if self._since is None:
            self._since = now
            self._delays = self.policy.delays()
        delay = next(self._delays, None)
        give_up = self.policy.give_up_after
        if delay is None or (give_up is not None and now - self._since + delay > give_up):
            self.ended()
            raise exc
        log.warning("%s failed (%s); retrying in %.2fs", self.what, exc, delay)
        self.next_try = now + delay
        return delay

    async def ready(self, deadline: float) -> bool:
        """Wait for the next try; False, having slept until ``deadline`` (monotonic), if it comes later."""
        if self.next_try is None:
            return True
        if self.next_try > deadline:
            await asyncio.sleep(max(0.0, deadline - time.monotonic()))
            return False
        await asyncio.sleep(max(0.0, self.next_try - time.monotonic()))
        return True
