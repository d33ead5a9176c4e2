"""``SqsSettings``: every option of the ``sqs://`` adapter, built from the URL, keywords and environment.

``sqs://[ACCESS_KEY:SECRET_KEY@][HOST[:PORT]][?region=...&tls=false&...]``: with a host the
adapter talks to that endpoint (an emulator such as moto or LocalStack, or a VPC endpoint);
without one it talks to AWS itself. Credentials in the URL win; otherwise the standard AWS chain
(environment, profile, instance role...) applies. Environment variables ``POLYBUS_SQS_<OPTION>``
fill options that neither the URL nor keywords set. Imports nothing from the rest of the adapter.
"""

from __future__ import annotations

import urllib.parse
from typing import Any, ClassVar

import pydantic
from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from polybus.adapter import AdapterSettings

__all__ = ["SNS_DEFAULT_MAX_SIZE", "SqsSettings"]

SNS_DEFAULT_MAX_SIZE = 256 * 1024
"""Largest message (body plus attributes) an SNS topic accepts unless configured otherwise."""


_FALSE = ("false", "0", "no", "off")
_ENDPOINT_HOST = "endpoint_host"
"""What :meth:`SqsSettings.url_values` gives: the URL's ``host:port``, made an ``endpoint_url`` once ``tls``
(query, keyword or environment) is known."""


class SqsSettings(AdapterSettings, BaseSettings):
    """Options of ``sqs://``; the URL's query string and ``connect()`` keywords set them.

    ``reconnect`` (from the base) sets how transient failures (endpoint unreachable, time-outs,
    throttling, 5xx) are retried, and when to give up.
    """

    model_config = SettingsConfigDict(
        env_prefix="POLYBUS_SQS_",
        extra="forbid",
        frozen=True,
        arbitrary_types_allowed=True,
        hide_input_in_errors=True,
    )
    schemes: ClassVar[tuple[str, ...]] = ("sqs",)
    adapter_name: ClassVar[str] = "sqs"

    endpoint_url: str | None = None
    """``http(s)://host:port`` of an emulator or private endpoint; ``None`` for AWS itself."""
    region: str | None = None
    """AWS region; ``None`` takes the AWS chain's (``AWS_REGION``...), or ``us-east-1`` for an endpoint."""
    access_key_id: str | None = None
    """The URL's user name; ``None`` uses the standard AWS credential chain."""
    secret_access_key: SecretStr | None = None
    """The URL's password (percent-encode ``/`` and ``+``)."""
    session_token: SecretStr | None = None
    """Temporary credentials' session token."""
    profile: str | None = None
    """A named profile from the AWS config files."""
    tls: bool = True
    """``false`` talks plain HTTP to an emulator endpoint."""
    verify: bool | str = True
    """Verify the endpoint's TLS certificate (``false``), or the path of a CA bundle."""
    prefix: str = pydantic.Field(default="", pattern=r"^[A-Za-z0-9_-]{0,40}$")
    """Prepended to every SNS topic and SQS queue name (for example one per environment)."""
    fifo: bool = False
    """Use FIFO topics and queues: per-key order (MessageGroupId) and de-duplication by message id."""
    visibility_timeout: int = pydantic.Field(default=30, ge=1, le=43200)
    """Seconds a received message stays hidden; held messages are extended automatically."""
    max_message_size: int = pydantic.Field(default=SNS_DEFAULT_MAX_SIZE, ge=1024, le=1024 * 1024)
    """Largest body plus attributes in bytes; above 256 KiB the topic's MaximumMessageSize is raised."""
    dead_letter_after: int | None = pydantic.Field(default=None, ge=1, le=1000)
    """Give each group a ``-dlq`` queue: rejected messages and those received this often go there."""
    retention: int | None = pydantic.Field(default=None, ge=60, le=1209600)
    """MessageRetentionPeriod of new group queues in seconds (SQS default: 4 days)."""
    prefetch: int = pydantic.Field(default=100, ge=1)
    """Default ``prefetch`` of consumers."""
    max_threads: int = pydantic.Field(default=8, ge=1, le=256)
    """Threads running boto3 calls other than long polls (publishes, acks, topology)."""
    receive_threads: int = pydantic.Field(default=32, ge=1, le=256)
    """Threads running ReceiveMessage long polls (one per consumer waiting)."""
    publish_window: int = pydantic.Field(default=8, ge=1, le=256)
    """PublishBatch calls in flight at once per topic (1 on FIFO topics, to keep key order)."""
    ack_linger: float = pydantic.Field(default=0.02, ge=0, le=5)
    """Seconds an ack waits for others to share its DeleteMessageBatch call."""
    connect_timeout: float = pydantic.Field(default=5.0, gt=0)
    read_timeout: float = pydantic.Field(default=30.0, gt=0)

    @property
    def secret(self) -> str | None:
        """The secret access key in clear, for scrubbing error messages only."""
        return self.secret_access_key.get_secret_value() if self.secret_access_key else None

    @classmethod
    def url_values(cls, parts: urllib.parse.SplitResult) -> dict[str, Any]:
        """The credentials and the endpoint's ``host:port`` of ``sqs://[KEY:SECRET@][HOST[:PORT]]``."""
        values: dict[str, Any] = {}
        if parts.username:
            values["access_key_id"] = urllib.parse.unquote(parts.username)
        if parts.password:
            values["secret_access_key"] = urllib.parse.unquote(parts.password)
        host = parts.netloc.rpartition("@")[2]
        if host:
            values[_ENDPOINT_HOST] = host
        return values

    @pydantic.model_validator(mode="before")
    @classmethod
    def _endpoint_from_host(cls, data: Any) -> Any:
        if isinstance(data, dict) and _ENDPOINT_HOST in data:
            data = dict(data)
            host = data.pop(_ENDPOINT_HOST)
            tls = data.get("tls", True)
            if isinstance(tls, str):
                tls = tls.strip().lower() not in _FALSE
            data.setdefault("endpoint_url", f"{'https' if tls else 'http'}://{host}")
        return data

    @pydantic.field_validator("verify", mode="before")
    @classmethod
    def _verify_flag(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() in ("true", "1", "false", "0"):
            return value.strip().lower() in ("true", "1")  # ?verify=false, not a CA bundle called "false"
        return value

    def display_url(self) -> str:
        """The URL with the secret key replaced by ``***``."""
        user = ""
        if self.access_key_id:
            user = urllib.parse.quote(self.access_key_id, safe="")
            user += ":***@" if self.secret_access_key else "@"
        host = urllib.parse.urlsplit(self.endpoint_url).netloc if self.endpoint_url else ""
        query = {"region": self.region} if self.region else {}
        if self.endpoint_url and not self.tls:
            query["tls"] = "false"
        if self.fifo:
            query["fifo"] = "true"
        tail = f"?{urllib.parse.urlencode(query)}" if query else ""
        return f"sqs://{user}{host}{tail}"
