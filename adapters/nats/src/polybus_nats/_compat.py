"""The one place that leans on nats-py beyond its documented API, each use with a tested fallback.

- :func:`enable_reconnect`: the broker connects with reconnecting off, so that a first connect to a
  wrong address or with a wrong password fails at once instead of retrying; once connected it turns
  reconnecting on. nats-py has no public switch for that: it re-reads ``allow_reconnect`` and
  ``max_reconnect_attempts`` from the connection's ``options`` dict on each disconnect, so that is
  what is changed. Where those keys are missing (a nats-py that stores its options elsewhere),
  :func:`enable_reconnect` returns ``False`` and the broker opens a second connection with
  reconnecting on from the start (the first one showed that the server and credentials are good).

The JetStream API prefix (``$JS.API``) is not read from nats-py's private ``JetStreamContext._prefix``:
the broker passes it when making the context and keeps it. Imports nats-py only.
"""

from __future__ import annotations

from typing import Any

from nats.aio.client import Client as NATS

__all__ = ["RECONNECT_FOREVER", "enable_reconnect"]

RECONNECT_FOREVER: dict[str, Any] = {"allow_reconnect": True, "max_reconnect_attempts": -1}
"""The connect options of a connection that reconnects without ever giving up."""

_SWITCHES = tuple(RECONNECT_FOREVER)
"""Keys of ``Client.options`` that :func:`enable_reconnect` needs (a test changes it to force the fallback)"""


def enable_reconnect(nc: NATS) -> bool:
    """Make the open connection ``nc`` reconnect forever after a disconnect; False if this nats-py cannot."""
    options = getattr(nc, "options", None)
    if not isinstance(options, dict) or not all(key in options for key in _SWITCHES):
        return False
    options.update(RECONNECT_FOREVER)
    return True
