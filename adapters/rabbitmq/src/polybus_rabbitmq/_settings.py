"""``RabbitSettings``: every option of the RabbitMQ adapter, built from an ``amqp(s)://`` URL.

``amqp://user:password@host:port/vhost?option=value``; keyword options given to
``polybus.connect`` override the URL's (``from_url`` comes from :class:`polybus.adapter.AdapterSettings`,
which also owns ``reconnect`` and its ``reconnect_<field>`` options). The password is a ``SecretStr``:
it never appears in a repr, a log line or an error message. Imports pydantic and ``polybus.adapter``.
"""

from __future__ import annotations

import urllib.parse
from typing import Any, ClassVar, Literal

import pydantic
from pydantic import SecretStr

from polybus.adapter import MiB, TlsSettings

__all__ = ["RabbitSettings"]

DEFAULT_MAX_MESSAGE_SIZE = 16 * MiB


class RabbitSettings(TlsSettings):
    """Options of ``amqp://`` and ``amqps://`` URLs (query string or keyword options)."""

    schemes: ClassVar[tuple[str, ...]] = ("amqp", "amqps")
    adapter_name: ClassVar[str] = "RabbitMQ"

    host: str = "localhost"
    port: int = pydantic.Field(default=5672, ge=1, le=65535)
    vhost: str = "/"
    """Virtual host; the URL path, percent-decoded (``/`` or empty means the default ``/``)."""
    username: str = "guest"
    password: SecretStr = SecretStr("guest")
    heartbeat: int = pydantic.Field(default=10, ge=0)
    """AMQP heartbeat in seconds (RabbitMQ advises 5 to 20). A silent connection (a half-open one:
    dead peer, lost NAT entry) is dropped after ``3 * (heartbeat + 1)`` seconds without a frame
    (aiormq's grace, checked every ``heartbeat / 2``): within 38 s by default (30 s took 103 s),
    6 s with ``heartbeat=1``. 0 turns heartbeats off: never do that across a network."""
    connect_timeout: float = pydantic.Field(default=10.0, gt=0)
    operation_timeout: float = pydantic.Field(default=30.0, gt=0)
    """Longest wait for a publisher confirm or a topology operation before it raises."""
    queue_type: Literal["auto", "quorum", "classic"] = "auto"
    """Type of group queues: quorum where the server supports them (``auto``), or forced."""
    on_unroutable: Literal["drop", "raise"] = "drop"
    """A message sent while no group exists reaches nobody: ``drop`` it (the semantic model:
    groups receive what is sent after they exist) or ``raise`` :class:`~polybus.PublishError`."""
    prefetch: int = pydantic.Field(default=100, ge=1, le=65535)
    """Default ``prefetch`` of consumers (AMQP basic.qos)."""
    publish_window: int = pydantic.Field(default=1000, ge=1)
    """Most unconfirmed messages ``send_many`` keeps in flight on one producer."""
    max_message_size: int = pydantic.Field(default=DEFAULT_MAX_MESSAGE_SIZE, ge=1)
    """Largest message accepted (body plus headers); keep it under the server's own limit."""
    client_name: str = "polybus"
    """Connection name shown in the RabbitMQ management UI."""

    @pydantic.field_validator("password", mode="before")
    @classmethod
    def _wrap_password(cls, value: Any) -> Any:
        return value if isinstance(value, SecretStr) else SecretStr(str(value))

    @classmethod
    def url_values(cls, parts: urllib.parse.SplitResult) -> dict[str, Any]:
        """TLS and default port from the scheme; host, port, user, password and vhost (the path)."""
        tls = parts.scheme.lower() == "amqps"
        values: dict[str, Any] = {"tls": tls, "port": 5671 if tls else 5672}
        if parts.hostname:
            values["host"] = parts.hostname
        if parts.port:
            values["port"] = parts.port
        if parts.username is not None:
            values["username"] = urllib.parse.unquote(parts.username)
        if parts.password is not None:
            values["password"] = SecretStr(urllib.parse.unquote(parts.password))
        if parts.path not in ("", "/"):
            values["vhost"] = urllib.parse.unquote(parts.path[1:])
        return values

    def display_url(self) -> str:
        """The URL without the password, for reprs and messages."""
        scheme = "amqps" if self.tls else "amqp"
        vhost = "" if self.vhost == "/" else urllib.parse.quote(self.vhost, safe="")
        return f"{scheme}://{self.username}:***@{self.host}:{self.port}/{vhost}"
