"""polybus-patterns: integration patterns written once on the polybus core interface.

Depends on ``polybus`` only, never on an adapter, so every pattern works on every broker.

- request-reply: :class:`Requester` (send a request, await its reply), :class:`RemoteError`
  (the responder's handler raised), :class:`RequesterStats`.
- fan-out: :func:`declare` a topology before traffic, :class:`RecipientList` /
  :func:`send_to_all` to send one message to several topics (:class:`RecipientListError`).
- the idempotent consumer: :func:`idempotent` with a :class:`MemoryStore`, :class:`RedisStore` or
  :class:`PostgresStore` (or any :class:`IdempotencyStore`); the stores' drivers are optional
  extras (``polybus-patterns[redis]``, ``[postgres]``), imported when a store is created.
"""

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
from polybus_patterns.fan_out import RecipientList, RecipientListError, declare, send_to_all
from polybus_patterns.request_reply import RemoteError, Requester, RequesterStats

__all__ = [
    "Claim",
    "ClaimLostError",
    "ClaimState",
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
    "current_claim",
    "declare",
    "idempotent",
    "send_to_all",
]
