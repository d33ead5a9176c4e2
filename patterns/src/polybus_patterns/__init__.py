"""polybus-patterns: integration patterns written once on the polybus core interface.

Depends on ``polybus`` only, never on an adapter, so every pattern works on every broker.

- request-reply: :class:`Requester` (send a request, await its reply), :class:`RemoteError`
  (the responder's handler raised), :class:`RequesterStats`.
- fan-out: :func:`declare` a topology before traffic, :class:`RecipientList` /
  :func:`send_to_all` to send one message to several topics (:class:`RecipientListError`).
- failure handling: :class:`RetryPolicy` and the :func:`retry` middleware (backoff, then dead
  letters per group), :class:`DeadLetters` (count, peek, replay to the group, purge).
- the idempotent consumer: :func:`idempotent` with a :class:`MemoryStore`, :class:`RedisStore` or
  :class:`PostgresStore` (or any :class:`IdempotencyStore`); the stores' drivers are optional
  extras (``polybus-patterns[redis]``, ``[postgres]``), imported when a store is created.
"""

from polybus_patterns._dead_letter import DeadLetter, dead_letter_topic
from polybus_patterns._dead_letters import DeadLetters, dead_letter_groups
from polybus_patterns._idempotency import (
    Claim,
    ClaimLostError,
    ClaimState,
    IdempotencyStore,
    IdempotencyStoreError,
    MemoryStore,
    current_claim,
    idempotent,
)
from polybus_patterns._postgres_store import PostgresStore
from polybus_patterns._redis_store import RedisStore
from polybus_patterns._retry import RetryPolicy, retry
from polybus_patterns.fan_out import RecipientList, RecipientListError, declare, send_to_all
from polybus_patterns.request_reply import RemoteError, Requester, RequesterStats

__all__ = [
    "Claim",
    "ClaimLostError",
    "ClaimState",
    "DeadLetter",
    "DeadLetters",
    "IdempotencyStore",
    "IdempotencyStoreError",
    "MemoryStore",
    "PostgresStore",
    "RecipientList",
    "RecipientListError",
    "RedisStore",
    "RemoteError",
    "Requester",
    "RequesterStats",
    "RetryPolicy",
    "current_claim",
    "dead_letter_groups",
    "dead_letter_topic",
    "declare",
    "idempotent",
    "retry",
    "send_to_all",
]
