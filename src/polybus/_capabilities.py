"""Typed, frozen declarations of what a broker can do.

Each adapter declares one ``Capabilities``. Patterns and the contract suite read it: a need
that is ``UNSUPPORTED`` fails at setup with ``UnsupportedCapabilityError``, never as a
silent difference at run time. Imports only ``polybus._errors``.
"""

from __future__ import annotations

import dataclasses
import enum

from polybus._errors import UnsupportedCapabilityError

__all__ = ["Capabilities", "Support"]


class Support(enum.Enum):
    """How a broker provides a capability."""

    NATIVE = "native"
    """The broker itself provides it."""
    EMULATED = "emulated"
    """The adapter builds it from other broker features, with the same observable semantics."""
    UNSUPPORTED = "unsupported"
    """Not available on this broker."""

    def __bool__(self) -> bool:
        return self is not Support.UNSUPPORTED


@dataclasses.dataclass(frozen=True, kw_only=True)
class Capabilities:
    """What a broker offers. Every field but the sizes is a :class:`Support` level."""

    competing_consumers: Support
    """Consumers in one group share the messages, each message going to one of them."""
    fan_out: Support
    """Every group receives every message sent after the group exists."""
    ordering_per_key: Support
    """A single consumer of a group receives messages with the same key in send order."""
    delayed_nack: Support
    """``nack(delay=...)`` redelivers after the delay without holding up other messages."""
    delivery_count: Support
    """``Delivery.attempt`` counts deliveries of the same message."""
    dead_letter: Support
    """Dead letters kept per group, to read and replay: ``native`` where the broker itself moves
    rejected or too often received messages to a dead-letter queue (SQS with ``dead_letter_after``),
    ``emulated`` where polybus keeps them in a dead-letter topic per group (``polybus_patterns``'
    ``retry`` and ``DeadLetters``, on every broker). See docs/failure-handling.md."""
    replay: Support
    """A new group can read messages sent before it existed."""
    priority: Support
    """Messages carry a priority that changes delivery order."""
    dedup: Support
    """The broker drops a re-sent message with the same id within a window."""
    backlog_stats: Support
    """``Topic.stats()`` reports each group's backlog."""
    max_message_size: int | None
    """Largest encoded body plus headers, in bytes, or ``None`` when unbounded."""
    dedup_window: float | None = None
    """Seconds during which re-sent ids are dropped, where ``dedup`` is supported."""
    key_affinity: Support = Support.UNSUPPORTED
    """The broker hands the messages of one key to one consumer of a group at a time (Kafka: a
    partition has one owner; SQS FIFO: a message group is locked while a message of it is in flight),
    so per-key order holds across competing consumers, not only within one."""
    request_reply: Support = Support.EMULATED
    """Replies reach a requester's inbox by the broker's own reply path (``native``) or through a
    topic per inbox that the core creates and deletes (``emulated``, the default for every adapter).
    """
    group_send: Support = Support.EMULATED
    """``Topic.send_to_group`` reaches one group of a topic by the broker's own routing (``native``:
    the group's queue) or by a ``polybus-group`` header that the other groups' consumers ack unseen
    (``emulated``, the default for every adapter)."""

    def require(self, name: str, *, broker: str = "this broker", need: str = "") -> Support:
        """Return the support level of ``name``; raise if it is unsupported.

        ``need`` says who asked, for the error message (for example ``"RetryPolicy(delay=...)"``).
        """
        field_names = {f.name for f in dataclasses.fields(self)}
        if name not in field_names or name in {"max_message_size", "dedup_window"}:
            raise ValueError(f"{name!r} is not a capability; known: {sorted(field_names)}")
        level: Support = getattr(self, name)
        if not level:
            who = f"{need} needs" if need else "needs"
            raise UnsupportedCapabilityError(f"{who} capability {name!r}, which {broker} does not support")
        return level

    def table(self) -> dict[str, str]:
        """The capabilities as ``{name: value}`` strings, for docs and the CLI."""
        out: dict[str, str] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = (
                value.value if isinstance(value, Support) else ("-" if value is None else str(value))
            )
        return out
