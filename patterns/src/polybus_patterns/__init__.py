"""polybus-patterns: integration patterns written once on the polybus core interface.

Depends on ``polybus`` only, never on an adapter, so every pattern works on every broker.

- request-reply: :class:`Requester` (send a request, await its reply), :class:`RemoteError`
  (the responder's handler raised), :class:`RequesterStats`.
- fan-out: :func:`declare` a topology before traffic, :class:`RecipientList` /
  :func:`send_to_all` to send one message to several topics (:class:`RecipientListError`).
"""

from polybus_patterns.fan_out import RecipientList, RecipientListError, declare, send_to_all
from polybus_patterns.request_reply import RemoteError, Requester, RequesterStats

__all__ = [
    "RecipientList",
    "RecipientListError",
    "RemoteError",
    "Requester",
    "RequesterStats",
    "declare",
    "send_to_all",
]
