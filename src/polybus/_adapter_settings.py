"""Settings and per-call option models that every adapter builds on.

``AdapterSettings`` is the base of each adapter's one settings model: it owns ``from_url`` (scheme
check, the URL's parts, query options, keyword overrides, readable errors with the password hidden)
and the fields every broker has (``prefetch``, ``max_message_size``, ``reconnect``).
``OptionsModel`` is the base of the option models an adapter declares for ``topic.consumer(...)``
and ``topic.producer(...)``; the core validates those calls against them (:func:`validate_options`).
Imports ``polybus._errors``, ``polybus._reconnect`` and ``polybus._settings`` only.
"""

from __future__ import annotations

import ssl
import urllib.parse
from typing import Any, ClassVar, Self

import pydantic

from polybus._errors import ConfigurationError
from polybus._reconnect import ReconnectPolicy
from polybus._settings import describe_error, redact_url, split_url, tls_context, url_options

__all__ = ["AdapterSettings", "MiB", "NoOptions", "OptionsModel", "validate_options"]

MiB = 1024 * 1024

_RECONNECT_FIELDS = ("initial", "maximum", "multiplier", "jitter", "max_attempts", "give_up_after")
"""``reconnect_<field>`` query or keyword options fold into the ``reconnect`` policy."""


class AdapterSettings(pydantic.BaseModel):
    """The base of an adapter's settings: built from a URL plus keyword options, never leaking secrets.

    Subclasses set ``schemes`` and ``adapter_name``, add their fields (passwords as ``SecretStr``),
    redeclare a field to change its default, and override :meth:`url_values` to read the URL's host,
    port, user, password and path. Query options and keyword options set fields by name (keywords
    win); ``reconnect_initial=0.5`` and the like tune the ``reconnect`` policy.
    """

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    schemes: ClassVar[tuple[str, ...]] = ()
    """The URL schemes this adapter handles; ``from_url`` refuses others."""
    adapter_name: ClassVar[str] = "adapter"
    """How error messages name the adapter."""

    prefetch: int = pydantic.Field(default=100, ge=1)
    """Default ``prefetch`` of consumers: the most deliveries one consumer holds unsettled."""
    max_message_size: int = pydantic.Field(default=1 * MiB, ge=1)
    """Largest encoded body plus headers a producer accepts, in bytes."""
    reconnect: ReconnectPolicy = ReconnectPolicy()
    """Backoff used to re-establish a lost connection and to retry the operation that hit it."""

    @classmethod
    def url_values(cls, parts: urllib.parse.SplitResult) -> dict[str, Any]:
        """Adapters: the settings given by the URL itself (host, port, user, password, path)."""
        return {}

    @classmethod
    def from_url(cls, url: str, **options: Any) -> Self:
        """Parse ``url`` and apply ``options`` on top; raise :class:`~polybus.ConfigurationError` if invalid.

        The message of that error names the bad option and never shows the password.
        """
        parts = split_url(url)
        scheme = parts.scheme.lower()
        if cls.schemes and scheme not in cls.schemes:
            handled = " and ".join(f"{s}://" for s in cls.schemes)
            raise ConfigurationError(f"the {cls.adapter_name} adapter handles {handled}, not {scheme}://")
        try:
            values = cls.url_values(parts)
            values.update({k: v for k, v in url_options(parts).items() if v != ""})
            values.update(options)
            _fold_reconnect(values)
            return cls(**values)
        except (pydantic.ValidationError, ValueError, TypeError) as exc:
            raise ConfigurationError(
                f"invalid {cls.adapter_name} options for {redact_url(url)}: {describe_error(exc, url)}"
            ) from None


class TlsSettings(AdapterSettings):
    """``AdapterSettings`` plus the TLS fields of a client that takes an :class:`ssl.SSLContext`."""

    tls: bool = False
    """Connect over TLS (a TLS URL scheme sets it)."""
    tls_ca_file: str | None = None
    """CA bundle that verifies the server (the system's store when unset)."""
    tls_cert_file: str | None = None
    """Client certificate, for mutual TLS."""
    tls_key_file: str | None = None
    """Key of the client certificate (when not in ``tls_cert_file``)."""
    tls_verify: bool = True
    """Verify the server's certificate and host name; turn off only for test servers."""

    @property
    def uses_tls(self) -> bool:
        """True when the connection is encrypted (adapters may widen it: a scheme, a CA file...)."""
        return self.tls

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context to connect with, or ``None`` for a plain connection.

        Unreadable files raise :class:`~polybus.ConfigurationError`.
        """
        if not self.uses_tls:
            return None
        return tls_context(
            ca_file=self.tls_ca_file,
            cert_file=self.tls_cert_file,
            key_file=self.tls_key_file,
            verify=self.tls_verify,
            where=f"the {self.adapter_name} adapter",
        )


def _fold_reconnect(values: dict[str, Any]) -> None:
    """Move ``reconnect_<field>`` options into the ``reconnect`` policy."""
    tuned = {f: values.pop(f"reconnect_{f}") for f in _RECONNECT_FIELDS if f"reconnect_{f}" in values}
    if not tuned:
        return
    base = values.get("reconnect", ReconnectPolicy())
    if not isinstance(base, ReconnectPolicy):
        raise ValueError("reconnect: give a ReconnectPolicy, or tune it with reconnect_<field> options")
    fields = {f: getattr(base, f) for f in _RECONNECT_FIELDS}
    fields.update(_ReconnectFields(**tuned).model_dump(exclude_unset=True))
    values["reconnect"] = ReconnectPolicy(**fields)


class _ReconnectFields(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    initial: float | None = pydantic.Field(default=None, gt=0)
    maximum: float | None = pydantic.Field(default=None, gt=0)
    multiplier: float | None = pydantic.Field(default=None, ge=1)
    jitter: float | None = pydantic.Field(default=None, ge=0, le=1)
    max_attempts: int | None = pydantic.Field(default=None, ge=1)
    give_up_after: float | None = pydantic.Field(default=None, gt=0)


class OptionsModel(pydantic.BaseModel):
    """Base of the option models adapters declare for ``topic.consumer(...)`` / ``topic.producer(...)``.

    Unknown keys are forbidden; the core validates every call (:func:`validate_options`).
    """

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)


class NoOptions(OptionsModel):
    """The option model of an adapter that takes no per-call options."""


def validate_options(
    model: type[OptionsModel], options: dict[str, Any], *, what: str, where: str
) -> OptionsModel:
    """``options`` validated into ``model``; a ConfigurationError naming each bad option otherwise.

    ``what`` is ``"consumer"`` or ``"producer"``; ``where`` names the adapter (``"redis://"``).
    """
    if not options and model is NoOptions:
        return _NO_OPTIONS
    try:
        return model(**options)
    except pydantic.ValidationError as exc:
        known = ", ".join(sorted(model.model_fields)) or "none"
        problems = []
        for err in exc.errors(include_input=False, include_url=False):
            name = ".".join(map(str, err["loc"])) or "value"
            if err["type"] == "extra_forbidden":
                problems.append(f"unknown {what} option {name!r}")
            else:
                problems.append(f"{what} option {name!r}: {err['msg']}")
        raise ConfigurationError(
            f"{'; '.join(problems)} for {where} (known {what} options: {known})"
        ) from None


_NO_OPTIONS = NoOptions()
