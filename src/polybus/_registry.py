"""``connect()``: pick an adapter by URL scheme through the ``polybus.brokers`` entry points.

An adapter registers ``<scheme> = "package.module:factory"`` in that entry-point group, where
``factory(url, **options)`` returns a :class:`~polybus.Broker`. Imports core modules only, and
no adapter: adapters are found at run time.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable
from typing import Any

from polybus._broker import Broker
from polybus._errors import ConfigurationError, UnknownSchemeError
from polybus._settings import PolybusSettings, describe_error, redact_url, split_url

__all__ = ["EXTRAS", "connect", "installed_schemes", "register_scheme"]

ENTRY_POINT_GROUP = "polybus.brokers"

EXTRAS: dict[str, str] = {
    "amqp": "rabbitmq",
    "amqps": "rabbitmq",
    "kafka": "kafka",
    "kafka+ssl": "kafka",
    "sqs": "sqs",
    "nats": "nats",
    "tls": "nats",
    "redis": "redis",
    "rediss": "redis",
}
"""Which ``polybus[extra]`` provides each well-known scheme."""

BrokerFactory = Callable[..., Broker]

_REGISTERED: dict[str, BrokerFactory] = {}
"""Schemes registered in this process with :func:`register_scheme`; they win over entry points."""


def register_scheme(scheme: str, factory: BrokerFactory) -> None:
    """Make ``connect("scheme://...")`` use ``factory(url, **options)`` in this process.

    For an adapter that is not installed as a distribution (one under development, or one defined
    in a test): installed adapters register through the ``polybus.brokers`` entry points instead.
    """
    if not scheme or scheme != scheme.lower() or "://" in scheme:
        raise ValueError(f"a scheme is lower-case and without '://', got {scheme!r}")
    _REGISTERED[scheme] = factory


def _entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def installed_schemes() -> list[str]:
    """URL schemes that an installed adapter handles."""
    return sorted({*_entry_points(), *_REGISTERED, "memory"})


def _factory(scheme: str) -> BrokerFactory:
    registered = _REGISTERED.get(scheme)
    if registered is not None:
        return registered
    ep = _entry_points().get(scheme)
    if ep is None:
        if scheme == "memory":  # works even from a source tree without installed metadata
            from polybus._memory import MemoryBroker

            return MemoryBroker.from_url
        installed = ", ".join(f"{s}://" for s in installed_schemes())
        hint = (
            f'; install it with: pip install "polybus[{EXTRAS[scheme]}]"'
            if scheme in EXTRAS
            else "; is the adapter that provides it installed?"
        )
        raise UnknownSchemeError(f"no polybus adapter for {scheme}:// (installed: {installed}){hint}")
    try:
        factory: BrokerFactory = ep.load()
    except ImportError as exc:
        raise ConfigurationError(f"the adapter for {scheme}:// ({ep.value}) failed to import: {exc}") from exc
    return factory


def connect(url: str | None = None, **options: Any) -> Broker:
    """A broker for ``url`` (or ``POLYBUS_URL`` when ``None``); connects on ``async with`` or first use.

    ``options`` override settings parsed from the URL; each adapter documents its own.
    """
    if url is None:
        secret = PolybusSettings().url
        if secret is None:
            raise ConfigurationError("no broker URL given and POLYBUS_URL is not set (try memory://)")
        url = secret.get_secret_value()
    parts = split_url(url)
    scheme = parts.scheme.lower()
    factory = _factory(scheme)
    try:
        return factory(url, **options)
    except ConfigurationError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(
            f"invalid options for {redact_url(url)}: {describe_error(exc, url)}"
        ) from None
