"""polybus-patterns: integration patterns written once on the polybus core interface.

Depends on ``polybus`` only, never on an adapter, so every pattern works on every broker.
The patterns themselves (retry, dead letter, idempotency, competing consumers, fan-out,
request-reply) arrive with their own issue; this package holds their place in the workspace.
"""

from polybus_patterns._dead_letter import DeadLetter, dead_letter_topic
from polybus_patterns._dead_letters import DeadLetters, dead_letter_groups
from polybus_patterns._retry import RetryPolicy, retry

__all__: list[str] = [
    "DeadLetter",
    "DeadLetters",
    "RetryPolicy",
    "dead_letter_groups",
    "dead_letter_topic",
    "retry",
]
