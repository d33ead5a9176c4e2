"""``RedisSettings``: every option of the redis adapter, built from the URL plus keyword options.

    redis://[user[:password]@]host[:port][/db][?option=value&...]
    rediss://...   the same over TLS

Query options and ``polybus.connect(url, **options)`` keywords set the same fields (keywords win);
``polybus.adapter.AdapterSettings`` does the parsing, this model adds the redis fields and reads
the URL's parts (:meth:`RedisSettings.url_values`). The password is a ``SecretStr``: it never
appears in a repr, a log line or an error message. Also here: :class:`ConsumerOptions`, the
options of ``topic.consumer(...)``. Imports ``polybus.adapter`` and pydantic only (redis-py
lazily, to build the connection arguments).
"""

from __future__ import annotations

import urllib.parse
from typing import Any, ClassVar, Literal

import pydantic
from pydantic import SecretStr

from polybus.adapter import AdapterSettings, MiB, OptionsModel

__all__ = ["ConsumerOptions", "RedisSettings"]


class RedisSettings(AdapterSettings):
    """Options of ``redis://`` and ``rediss://`` URLs (``reconnect`` comes from the base)."""

    schemes: ClassVar[tuple[str, ...]] = ("redis", "rediss")
    adapter_name: ClassVar[str] = "redis"

    # -- where and who ----------------------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = pydantic.Field(default=6379, ge=1, le=65535)
    db: int = pydantic.Field(default=0, ge=0)
    username: str | None = None
    password: SecretStr | None = None
    client_name: str | None = None
    """Sent with ``CLIENT SETNAME`` on every connection (shows up in ``CLIENT LIST``)."""

    # -- TLS (``rediss://`` turns it on) -------------------------------------------------------
    tls: bool = False
    ssl_ca_certs: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_cert_reqs: Literal["required", "optional", "none"] = "required"
    ssl_check_hostname: bool = True

    # -- timeouts (``reconnect``, the policy after a lost connection, comes from the base) -------
    connect_timeout: float = pydantic.Field(default=5.0, gt=0)
    socket_timeout: float = pydantic.Field(default=10.0, gt=1.0)
    """Longest wait for a reply (a blocking read waits at most 1 s on top of this)."""

    # -- semantics ------------------------------------------------------------------------------
    prefix: str = ""
    """Prepended to the topic name to form the stream key (``orders`` -> ``{prefix}orders``)."""
    prefetch: int = pydantic.Field(default=256, ge=1)
    """Default ``prefetch`` of consumers: the most deliveries one consumer holds unsettled."""
    visibility_timeout: float = pydantic.Field(default=30.0, ge=0.5)
    """Seconds after which an entry held by a dead consumer is reclaimed by another member.

    A live consumer refreshes what it holds every third of this, however long its handler runs.
    Use the same value for every member of a group."""
    claim_interval: float = pydantic.Field(default=1.0, gt=0)
    """How often an idle consumer looks for entries to reclaim (nacked, released or abandoned)."""
    max_len: int | None = pydantic.Field(default=None, ge=1)
    """Soft bound of the stream length: producers trim older entries, but never one that some
    group has not yet acked (pending or not yet read). ``None`` never trims."""
    max_message_size: int = pydantic.Field(default=16 * MiB, ge=1)
    """Largest body plus headers a producer accepts (Redis itself allows up to 512 MiB)."""

    @property
    def scheme(self) -> str:
        return "rediss" if self.tls else "redis"

    @property
    def display_url(self) -> str:
        """The URL with the password replaced by ``***`` (and no query options)."""
        auth = ""
        if self.username or self.password:
            auth = urllib.parse.quote(self.username or "", safe="")
            auth += ":***@" if self.password else "@"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{auth}{host}:{self.port}/{self.db}"

    @classmethod
    def url_values(cls, parts: urllib.parse.SplitResult) -> dict[str, Any]:
        """The settings the URL gives: TLS from the scheme, host, port, user, password, db."""
        values: dict[str, Any] = {"tls": parts.scheme.lower() == "rediss"}
        if parts.hostname:
            values["host"] = parts.hostname
        if parts.port:
            values["port"] = parts.port
        if parts.username:
            values["username"] = urllib.parse.unquote(parts.username)
        if parts.password is not None:
            values["password"] = urllib.parse.unquote(parts.password)
        path = parts.path.strip("/")
        if path:
            values["db"] = path
        return values

    def connection_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for redis-py's connection pool (its own retries turned off)."""
        from redis.asyncio.connection import Connection, SSLConnection
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        kwargs: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "db": self.db,
            "username": self.username,
            "password": self.password.get_secret_value() if self.password else None,
            "client_name": self.client_name,
            "socket_connect_timeout": self.connect_timeout,
            "socket_timeout": self.socket_timeout,
            "retry": Retry(NoBackoff(), 0),
            "protocol": 2,
            "connection_class": Connection,
        }
        if self.tls:
            kwargs.update(
                connection_class=SSLConnection,
                ssl_ca_certs=self.ssl_ca_certs,
                ssl_certfile=self.ssl_certfile,
                ssl_keyfile=self.ssl_keyfile,
                ssl_cert_reqs=self.ssl_cert_reqs,
                ssl_check_hostname=self.ssl_check_hostname and self.ssl_cert_reqs != "none",
            )
        return kwargs


class ConsumerOptions(OptionsModel):
    """Options of ``topic.consumer(group, name=...)`` on redis."""

    name: str | None = pydantic.Field(default=None, min_length=1, max_length=200)
    """A stable consumer name: a consumer restarted under the same name first gets back the
    entries it held when it died. By default a fresh ``host-pid-random`` name."""
