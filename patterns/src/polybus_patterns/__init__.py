"""polybus-patterns: integration patterns written once on the polybus core interface.

Depends on ``polybus`` only, never on an adapter, so every pattern works on every broker.

- request-reply: :class:`Requester` (send a request, await its reply), :class:`RemoteError`
  (the responder's handler raised), :class:`RequesterStats`.
"""

from polybus_patterns.request_reply import RemoteError, Requester, RequesterStats

__all__ = ["RemoteError", "Requester", "RequesterStats"]
