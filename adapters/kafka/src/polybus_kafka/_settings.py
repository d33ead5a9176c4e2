"""``KafkaSettings``: every option of ``kafka://`` and ``kafka+ssl://`` URLs, and the client keywords.

Built by ``AdapterSettings.from_url`` from ``POLYBUS_KAFKA_<OPTION>`` environment variables, the
URL, its query string and keyword options of ``polybus.connect`` (in rising order of precedence).
Passwords are ``SecretStr`` and leave this module only inside the keyword dicts handed to aiokafka.
Imports polybus only.
"""

from __future__ import annotations

import os
import ssl
import urllib.parse
from typing import Any, ClassVar, Literal

import pydantic
from pydantic import SecretStr

from polybus.adapter import AdapterSettings, tls_context

__all__ = ["KafkaSettings"]

_ENV_PREFIX = "POLYBUS_KAFKA_"
_URL_HOSTS = "_url_hosts"
"""Key of the URL's own host in the values ``url_values`` gives; ``bootstrap_servers`` adds to it."""


class KafkaSettings(AdapterSettings):
    """Options of ``kafka://[user:password@]host:port?option=value``.

    ``kafka+ssl://`` turns TLS on; a user name turns SASL on (``sasl_mechanism``, PLAIN by default).
    """

    model_config = pydantic.ConfigDict(hide_input_in_errors=True)
    schemes: ClassVar[tuple[str, ...]] = ("kafka", "kafka+ssl")
    adapter_name: ClassVar[str] = "kafka"

    bootstrap_servers: list[str] = pydantic.Field(default_factory=lambda: ["127.0.0.1:9092"])
    """``host:port`` of the brokers to bootstrap from (the URL's host, plus ``bootstrap_servers=a:1,b:2``)."""
    tls: bool = False
    """Use TLS (``kafka+ssl://`` sets it)."""
    username: str | None = None
    """SASL user name (from the URL); setting it turns SASL on."""
    password: SecretStr | None = None
    """SASL password (from the URL)."""
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    ssl_cafile: str | None = None
    """CA bundle that signs the brokers' certificates (default: the system's)."""
    ssl_certfile: str | None = None
    """Client certificate for mutual TLS."""
    ssl_keyfile: str | None = None
    """Private key of the client certificate."""
    ssl_password: SecretStr | None = None
    """Password of ``ssl_keyfile``, if it is encrypted."""
    ssl_check_hostname: bool = True
    client_id: str = "polybus"

    partitions: int = pydantic.Field(default=8, ge=1)
    """Partitions of topics polybus creates; bounds how many members of one group work in parallel."""
    retry_partitions: int | None = pydantic.Field(default=None, ge=1)
    """Partitions of each group's retry topic (default: ``partitions``)."""
    replication_factor: int = pydantic.Field(default=1, ge=1)
    """Replicas of topics polybus creates (use 3 on a production cluster)."""
    max_message_size: int = pydantic.Field(default=1_000_000, ge=1)
    """Largest body plus headers accepted; below Kafka's default ``message.max.bytes`` with headroom."""
    max_batch_size: int = pydantic.Field(default=512 * 1024, ge=1024)
    """Bytes per record batch sent (a single larger record still goes alone)."""
    compression: Literal["gzip", "snappy", "lz4", "zstd"] | None = None
    idempotence: bool | None = None
    """Idempotent producer; ``None`` = on where the broker supports it."""
    request_timeout_ms: int = pydantic.Field(default=30_000, ge=1000)
    """How long a send may wait for the broker (a send during an outage raises after this)."""
    linger_ms: int = pydantic.Field(default=0, ge=0)

    prefetch: int = pydantic.Field(default=500, ge=1)
    """Default ``prefetch`` of consumers."""
    fetch_max_wait_ms: int = pydantic.Field(default=100, ge=1)
    """How long the broker holds an empty fetch; bounds delivery latency (tansu answers after half)."""
    max_partition_fetch_bytes: int = pydantic.Field(default=1024 * 1024, ge=1024)
    fetch_max_bytes: int = pydantic.Field(default=16 * 1024 * 1024, ge=1024)
    session_timeout_ms: int = pydantic.Field(default=6_000, ge=1000)
    """A killed member's partitions move to the others after this (Kafka's lowest allowed by default)."""
    heartbeat_interval_ms: int = pydantic.Field(default=1_000, ge=100)
    """Members notice a rebalance (a new member) within this."""
    rebalance_timeout_ms: int = pydantic.Field(default=4_000, ge=1000)
    """How long the coordinator waits for members to rejoin; tansu holds every join for half of it."""
    max_poll_interval_ms: int = pydantic.Field(default=300_000, ge=1000)
    commit_interval: float = pydantic.Field(default=0.05, ge=0)
    """Seconds acks are coalesced before their offsets are committed."""
    retry_buffer: int = pydantic.Field(default=1000, ge=1)
    """Delayed retries held in memory per consumer before the retry topic is paused."""
    join_timeout: float = pydantic.Field(default=60.0, gt=0)
    """Longest a consumer waits to join its group when it opens."""
    tansu: bool | None = None
    """Apply the workarounds for tansu (``_tansu.py``); ``None`` = where the cluster id is tansu's."""

    @pydantic.field_validator("bootstrap_servers", mode="before")
    @classmethod
    def _split_servers(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [s.strip() for s in value.split(",") if s.strip()]
        return list(value) if isinstance(value, tuple | list) else value

    def __repr__(self) -> str:
        return (
            f"KafkaSettings(bootstrap_servers={self.bootstrap_servers!r}, tls={self.tls}, "
            f"user={self.username!r})"
        )

    @classmethod
    def url_values(cls, parts: urllib.parse.SplitResult) -> dict[str, Any]:
        """``POLYBUS_KAFKA_<OPTION>`` environment variables, then what the URL itself gives."""
        values: dict[str, Any] = {}
        for name in cls.model_fields:
            env = os.environ.get(_ENV_PREFIX + name.upper())
            if env is not None and name not in ("tls", "reconnect"):  # the scheme sets tls
                values[name] = env
        values["tls"] = parts.scheme.lower() == "kafka+ssl"
        if parts.hostname:
            values[_URL_HOSTS] = [f"{parts.hostname}:{parts.port or 9092}"]
        if parts.username:
            values["username"] = urllib.parse.unquote(parts.username)
        if parts.password:
            values["password"] = urllib.parse.unquote(parts.password)
        return values

    @pydantic.model_validator(mode="before")
    @classmethod
    def _add_url_host(cls, values: Any) -> Any:
        """The URL's host comes first; ``bootstrap_servers`` (query, keyword, environment) adds to it."""
        if not isinstance(values, dict) or _URL_HOSTS not in values:
            return values
        values = dict(values)
        hosts = list(values.pop(_URL_HOSTS))
        extra = values.get("bootstrap_servers")
        if extra:
            hosts += cls._split_servers(extra)
        values["bootstrap_servers"] = hosts
        return values

    @property
    def display_url(self) -> str:
        scheme = "kafka+ssl" if self.tls else "kafka"
        user = (
            f"{self.username}:***@"
            if self.username and self.password
            else (f"{self.username}@" if self.username else "")
        )
        return f"{scheme}://{user}{','.join(self.bootstrap_servers)}"

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments shared by aiokafka's producer, consumer and admin client."""
        sasl = self.username is not None
        protocol = {(False, False): "PLAINTEXT", (True, False): "SSL", (False, True): "SASL_PLAINTEXT"}.get(
            (self.tls, sasl), "SASL_SSL"
        )
        out: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "client_id": self.client_id,
            "security_protocol": protocol,
            "request_timeout_ms": self.request_timeout_ms,
        }
        if self.tls:
            out["ssl_context"] = self._ssl_context()
        if sasl:
            out["sasl_mechanism"] = self.sasl_mechanism
            out["sasl_plain_username"] = self.username
            out["sasl_plain_password"] = self.password.get_secret_value() if self.password else ""
        return out

    def _ssl_context(self) -> ssl.SSLContext:
        return tls_context(
            ca_file=self.ssl_cafile,
            cert_file=self.ssl_certfile,
            key_file=self.ssl_keyfile,
            key_password=self.ssl_password,
            check_hostname=self.ssl_check_hostname,
            where=self.display_url,
        )
