"""Settings read from the environment, and URL helpers shared by every adapter.

``POLYBUS_URL`` names the broker when ``connect()`` gets no URL. URLs may carry passwords:
:func:`redact_url` is what goes into reprs, logs and error messages. Imports only
``polybus._errors``.
"""

from __future__ import annotations

import ssl
import urllib.parse
from typing import Any

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from polybus._errors import ConfigurationError

__all__ = ["PolybusSettings", "describe_error", "redact_url", "split_url", "tls_context", "url_options"]


class PolybusSettings(BaseSettings):
    """Process-wide settings, from ``POLYBUS_*`` environment variables."""

    model_config = SettingsConfigDict(env_prefix="POLYBUS_", extra="ignore")

    url: SecretStr | None = None
    """The broker URL used by ``polybus.connect()`` when called without one (``POLYBUS_URL``)."""


def split_url(url: str) -> urllib.parse.SplitResult:
    """Split a broker URL; raise :class:`ConfigurationError` (with the password hidden) if malformed."""
    if not isinstance(url, str) or "://" not in url:
        shown = redact_url(url) if isinstance(url, str) else type(url).__name__
        raise ConfigurationError(f"not a broker URL: {shown!r} (expected scheme://...)")
    try:
        parts = urllib.parse.urlsplit(url)
        _ = parts.port  # validates the port
    except ValueError as exc:
        raise ConfigurationError(f"malformed broker URL {redact_url(url)!r}: {exc}") from None
    return parts


def redact_url(url: str) -> str:
    """``url`` with the password (if any) replaced by ``***``; never raises."""
    try:
        scheme, rest = url.split("://", 1)
    except ValueError:
        return "***" if "@" in url else url
    netloc, sep, tail = rest.partition("/")
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:***@{host}" if ":" in userinfo else f"{user}@{host}"
    # query strings may carry secrets too (password=..., secret_key=...)
    if "?" in tail or "?" in netloc:
        path, _, query = (netloc + sep + tail).partition("?")
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
        cleaned = [(k, "***" if _secretish(k) else v) for k, v in pairs]
        return f"{scheme}://{path}?{urllib.parse.urlencode(cleaned, safe='*/:')}"
    return f"{scheme}://{netloc}{sep}{tail}"


def _secretish(key: str) -> bool:
    key = key.lower()
    return any(word in key for word in ("password", "secret", "token", "passwd", "key")) and key != "key_file"


def url_options(parts: urllib.parse.SplitResult) -> dict[str, Any]:
    """The query string as a dict (last value wins)."""
    return dict(urllib.parse.parse_qsl(parts.query, keep_blank_values=True))


def describe_error(exc: BaseException, url: str) -> str:
    """A message for ``exc`` that is safe to show: pydantic inputs dropped, the URL's password hidden."""
    import pydantic

    if isinstance(exc, pydantic.ValidationError):
        text = "; ".join(
            f"{'.'.join(map(str, err['loc'])) or 'value'}: {err['msg']}"
            for err in exc.errors(include_input=False, include_url=False)
        )
    else:
        text = str(exc)
    try:
        password = urllib.parse.urlsplit(url).password
    except ValueError:
        password = None
    if password:
        text = text.replace(password, "***").replace(urllib.parse.unquote(password), "***")
    return text


def tls_context(
    *,
    ca_file: str | None = None,
    cert_file: str | None = None,
    key_file: str | None = None,
    key_password: SecretStr | None = None,
    verify: bool = True,
    check_hostname: bool = True,
    where: str = "",
) -> ssl.SSLContext:
    """A client TLS context from the usual settings; unreadable files raise ConfigurationError.

    ``verify=False`` turns off certificate and host-name checks (test servers only);
    ``check_hostname=False`` keeps the certificate check and skips the host name.
    """
    try:
        context = ssl.create_default_context(cafile=ca_file)
        if cert_file:
            password = key_password.get_secret_value() if key_password else None
            context.load_cert_chain(cert_file, key_file, password)
    except (OSError, ssl.SSLError) as exc:
        suffix = f" for {where}" if where else ""
        raise ConfigurationError(f"cannot load the TLS files{suffix}: {exc}") from None
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif not check_hostname:
        context.check_hostname = False
    return context
