"""polybus-patterns: integration patterns written once on the polybus core interface.

Depends on ``polybus`` only, never on an adapter, so every pattern works on every broker.

- fan-out (:mod:`polybus_patterns.fan_out`): :func:`declare` a topology before traffic,
  :class:`RecipientList` / :func:`send_to_all` to send one message to several topics.
"""

from polybus_patterns.fan_out import RecipientList, RecipientListError, declare, send_to_all

__all__ = ["RecipientList", "RecipientListError", "declare", "send_to_all"]
