"""Every private aiokafka attribute the adapter touches, each behind one function with a fallback.

aiokafka (0.14) offers no public way to do these few things; each function here reads the private
attribute it needs with ``getattr`` and falls back to a slower or weaker public path when it is not
there (another aiokafka version). ``tests/test_compat.py`` checks both sides: that the private
path is taken with the installed aiokafka (so an upgrade that removes it fails there, loudly, not
silently slower in production), and that each fallback works with an object lacking the attribute.

- ``BatchBuilder._builder`` / ``_relative_offset``: append records through the C record builder
  (the ``BatchBuilder.append`` wrapper costs as much again per record); fallback: the wrapper.
- ``AIOKafkaAdminClient._client``: send a request the admin client has no method for
  (DeleteGroups, LeaveGroup, JoinGroup) to a group's coordinator; fallback: ``CompatError``.
- ``AIOKafkaConsumer._coordinator``: a member's id and generation; fallback: unknown.
- ``AIOKafkaProducer.client`` and its ``_topics``: the topics the producer keeps metadata of (a topic
  nobody here sends to any more must leave that list, or a metadata request re-creates it once it is
  deleted); fallback: left as it is.

Imports nothing: it works on the aiokafka objects it is given.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

__all__ = [
    "CompatError",
    "coordinator_send",
    "fast_append",
    "forget_topics",
    "member_of",
    "set_record_count",
    "track_topic",
]


class CompatError(RuntimeError):
    """This aiokafka lacks what a function of this module needs, and there is no fallback."""


def fast_append(batch: Any) -> Callable[..., Any] | None:
    """``append(offset, timestamp_ms, key, value, headers)`` of a fresh batch's record builder, or None.

    Records appended through it bypass ``BatchBuilder.append``; call :func:`set_record_count`
    before the batch is sent. None: use ``batch.append(...)`` (the public wrapper).
    """
    builder = getattr(batch, "_builder", None)
    if builder is None or getattr(batch, "_relative_offset", None) != 0:
        return None
    append: Callable[..., Any] = builder.append
    return append


def set_record_count(batch: Any, records: int) -> None:
    """Tell ``batch`` it holds ``records`` records (appended through :func:`fast_append`)."""
    if getattr(batch, "_relative_offset", records) != records:
        batch._relative_offset = records


async def coordinator_send(admin: Any, gid: str, request: Any) -> Any:
    """Send ``request`` to the coordinator of group ``gid`` through ``admin``; return the response.

    Raises ``CompatError`` where the admin client has no inner client to send it with.
    """
    client = getattr(admin, "_client", None)
    send = getattr(client, "send", None)
    if send is None:
        raise CompatError(f"this aiokafka's admin client cannot send {type(request).__name__}")
    node = await admin.find_coordinator(gid)
    return await send(node, request)


def member_of(consumer: Any) -> tuple[str | None, int]:
    """``(member id, generation)`` of an aiokafka group consumer; ``(None, -1)`` when unknown."""
    coordinator = getattr(consumer, "_coordinator", None)
    member = getattr(coordinator, "member_id", None)
    generation = getattr(coordinator, "generation", -1)
    return (member if isinstance(member, str) and member else None), (
        generation if isinstance(generation, int) else -1
    )


def track_topic(producer: Any, name: str) -> bool:
    """Make ``producer`` keep metadata of ``name`` (again); False where that is not possible."""
    add_topic = getattr(getattr(producer, "client", None), "add_topic", None)
    if add_topic is None:
        return False
    add_topic(name)  # a future, done once the metadata is in; sends wait for it themselves
    return True


def forget_topics(producer: Any, names: Iterable[str]) -> bool:
    """Stop ``producer`` asking for metadata of ``names``; False where that is not possible."""
    client = getattr(producer, "client", None)
    tracked = getattr(client, "_topics", None)
    set_topics = getattr(client, "set_topics", None)
    if not isinstance(tracked, set) or set_topics is None:
        return False
    doomed = set(names)
    if tracked & doomed:
        set_topics(tracked - doomed)
    return True
