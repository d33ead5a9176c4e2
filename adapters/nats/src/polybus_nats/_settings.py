"""``NatsSettings``: every option of the NATS adapter, built from the URL and keyword options.

``nats://user:password@host:4222?storage=file&ack_wait=30`` or ``tls://host:4222?tls_ca_file=...``.
Passwords and tokens are ``SecretStr``: they never appear in a repr, a log line or an exception.
Imports polybus core and pydantic only (never nats-py, so settings can be checked without it).
"""

from __future__ import annotations

import urllib.parse
from typing import Any, ClassVar, Literal

import pydantic
from pydantic import SecretStr

from polybus.adapter import TlsSettings

__all__ = ["NatsSettings"]

DEFAULT_PORT = 4222


class NatsSettings(TlsSettings):
    """Options of ``nats://`` and ``tls://`` URLs; keyword options of ``connect()`` override the URL's.

    ``reconnect`` (from the base) sets the backoff and jitter between reconnect attempts, and how
    long a send retries through an outage; ``max_message_size`` is capped by the server's
    ``max_payload`` (less 512 bytes for polybus's headers).
    """

    schemes: ClassVar[tuple[str, ...]] = ("nats", "tls")
    adapter_name: ClassVar[str] = "nats"

    # -- connection ---------------------------------------------------------------------------
    servers: list[str] = pydantic.Field(default_factory=lambda: [f"nats://127.0.0.1:{DEFAULT_PORT}"])
    """Server addresses without credentials (``nats://host:port`` or ``tls://host:port``)."""
    user: str | None = None
    password: SecretStr | None = None
    token: SecretStr | None = None
    """Token authentication (``nats://TOKEN@host`` or ``?token=``)."""
    creds_file: str | None = None
    """A ``.creds`` file (JWT + NKey seed) for decentralised auth."""
    nkeys_seed_file: str | None = None
    """A file holding an NKey seed."""
    tls_hostname: str | None = None
    tls_handshake_first: bool = False
    name: str = "polybus"
    """Connection name shown in the server's monitoring."""
    connect_timeout: float = pydantic.Field(default=5.0, gt=0)
    ping_interval: float = pydantic.Field(default=10.0, gt=0)
    """Seconds between the client's pings. A connection that answers none of
    ``max_outstanding_pings`` pings in a row is dropped and reconnected: a half-open connection
    (a silent peer, a dead NAT entry) is noticed within ``ping_interval * (max_outstanding_pings +
    1)``, 30 s by default (nats-py's own default, 2 minutes times 3, would take up to 6 minutes)."""
    max_outstanding_pings: int = pydantic.Field(default=2, ge=1)
    """Unanswered pings that make the connection stale (see ``ping_interval``)."""

    # -- streams (topics) ---------------------------------------------------------------------
    stream_prefix: str = ""
    """Prefix of stream names: topic ``orders`` is stream ``{stream_prefix}orders``."""
    subject_prefix: str = ""
    """Prefix of subjects: topic ``orders`` is subject ``{subject_prefix}orders``."""
    storage: Literal["file", "memory"] = "file"
    retention: Literal["limits", "interest"] = "limits"
    replicas: int = pydantic.Field(default=1, ge=1, le=5)
    max_age: float | None = pydantic.Field(default=None, gt=0)
    """Seconds a stream keeps a message (``None``: no age limit)."""
    max_bytes: int | None = pydantic.Field(default=None, gt=0)
    max_msgs: int | None = pydantic.Field(default=None, gt=0)
    duplicate_window: float = pydantic.Field(default=120.0, gt=0)
    """Seconds during which a re-sent message id is dropped by the server."""

    # -- consumers (groups) -------------------------------------------------------------------
    ack_wait: float = pydantic.Field(default=30.0, gt=0)
    """Seconds before an unacked delivery is redelivered; held deliveries are kept alive meanwhile."""
    max_ack_pending: int = pydantic.Field(default=20_000, ge=-1)
    """Most unacked deliveries a group may have across all its members (-1: unlimited)."""
    listener_inactive_threshold: float = pydantic.Field(default=3600.0, gt=0)
    """Seconds without a receive after which the server removes a group-less listener (its process
    vanished, or it stopped receiving); receiving from a removed listener raises NotFoundError."""
    prefetch: int = pydantic.Field(default=256, ge=1)
    """Default ``prefetch`` of consumers."""

    # -- producers ----------------------------------------------------------------------------
    publish_timeout: float = pydantic.Field(default=5.0, gt=0)
    """Seconds to wait for the server's confirmation before a send is retried (with the same id)."""
    max_pending_publishes: int = pydantic.Field(default=4000, ge=1)
    """Most publishes awaiting confirmation at once (the pipeline window)."""

    @pydantic.field_validator("servers", mode="before")
    @classmethod
    def _split_servers(cls, value: Any) -> Any:
        if isinstance(value, str):  # ?servers=nats://a:4222,nats://b:4222
            return [s.strip() for s in value.split(",") if s.strip()]
        return value

    @pydantic.field_validator("stream_prefix")
    @classmethod
    def _check_stream_prefix(cls, value: str) -> str:
        if not all(c.isascii() and (c.isalnum() or c in "_-") for c in value):
            raise ValueError("may only hold ASCII letters, digits, '_' and '-'")
        return value

    @pydantic.field_validator("subject_prefix")
    @classmethod
    def _check_subject_prefix(cls, value: str) -> str:
        if not all(c.isascii() and (c.isalnum() or c in "._-") for c in value) or ".." in value:
            raise ValueError("may only hold ASCII letters, digits, '.', '_' and '-'")
        return value

    @property
    def uses_tls(self) -> bool:
        """True when the connection is encrypted: ``tls``, a ``tls://`` server, or a ``tls_*`` file."""
        return (
            self.tls
            or any(s.startswith("tls://") for s in self.servers)
            or bool(self.tls_ca_file or self.tls_cert_file)
        )

    @classmethod
    def url_values(cls, parts: urllib.parse.SplitResult) -> dict[str, Any]:
        """The server, TLS and credentials of ``nats://[user[:password]@]host[:port]`` (or ``tls://``)."""
        scheme = parts.scheme.lower()
        values: dict[str, Any] = {}
        host = parts.hostname or "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        values["servers"] = [f"{scheme}://{host}:{parts.port or DEFAULT_PORT}"]
        if scheme == "tls":
            values["tls"] = True
        if parts.username:
            user = urllib.parse.unquote(parts.username)
            if parts.password is None:
                values["token"] = user  # nats://TOKEN@host is the NATS convention
            else:
                values["user"] = user
                values["password"] = urllib.parse.unquote(parts.password)
        return values
