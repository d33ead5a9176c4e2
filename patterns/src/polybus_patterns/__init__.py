"""polybus-patterns: integration patterns written once on the polybus core interface.

Depends on ``polybus`` only, never on an adapter, so every pattern works on every broker.
The idempotent consumer (:func:`idempotent` with a :class:`MemoryStore`, :class:`RedisStore` or
:class:`PostgresStore`) lives in ``_idempotency`` and the store modules; the stores' drivers are
optional extras (``polybus-patterns[redis]``, ``[postgres]``), imported when a store is created.
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

__all__: list[str] = [
    "Claim",
    "ClaimLostError",
    "ClaimState",
    "IdempotencyStore",
    "IdempotencyStoreError",
    "MemoryStore",
    "PostgresStore",
    "RedisStore",
    "current_claim",
    "idempotent",
]
