"""``ServiceSettings``: how a service built with :class:`~polybus.App` is configured when it runs.

Sources, first wins: keyword arguments (``polybus run``'s options), the environment (``POLYBUS_URL``,
``POLYBUS_GRACE_PERIOD``, ``POLYBUS_TOPICS='{"orders": "prod-orders"}'`` or
``POLYBUS_TOPICS__ORDERS=prod-orders``, ...), one TOML file, the defaults. The file is the one
given (``_config_file=``, ``polybus run --config``), else ``polybus.toml`` in the working directory,
else the ``[tool.polybus]`` table of ``./pyproject.toml``.

The file is read by pydantic-settings' own TOML source and validated strictly *before* it is merged:
an unknown key or a bad value is a :class:`~polybus.ConfigurationError` that names the file, the
line and the key (``polybus.toml:7: unknown key 'subscriptions.bill.concurency'``). tomllib reports
the line of a syntax error but not of a key, so :func:`key_line` finds a key's line in the text.
Values are never echoed in errors (a URL may carry a password). Imports core modules only.
"""

from __future__ import annotations

import contextvars
import dataclasses
import functools
import re
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pydantic
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from polybus._errors import ConfigurationError
from polybus._settings import redact_url

__all__ = ["ServiceSettings", "SubscriptionSettings", "find_config_file", "key_line"]

CONFIG_FILE = "polybus.toml"
PYPROJECT_TABLE = ("tool", "polybus")


class SubscriptionSettings(BaseModel):
    """Overrides for one subscription of the App, found by its name (the handler's name by default)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    concurrency: int | None = Field(default=None, ge=1)
    """Handlers of this subscription running at once (``None``: as written in the code)."""
    prefetch: int | None = Field(default=None, ge=1)
    """Deliveries held unsettled at once (``None``: as written in the code)."""


@dataclasses.dataclass
class _Loading:
    requested: Path | None
    used: Path | None = None


_LOADING: contextvars.ContextVar[_Loading | None] = contextvars.ContextVar("polybus_loading", default=None)


class ServiceSettings(BaseSettings):
    """How a service runs: broker URL, grace period, topic names, subscription overrides, processes.

    settings = polybus.ServiceSettings()                        # environment, ./polybus.toml, defaults
    settings = polybus.ServiceSettings(_config_file="prod.toml", grace_period=10)
    await app.run(broker, stop=stop, **settings.run_options())

    A ``polybus.toml``::

        url = "redis://localhost:6379"
        grace_period = 20
        [topics]                      # logical name in the code -> name on the broker
        orders = "prod-orders-v2"
        [subscriptions.bill]          # a subscription's name: its handler's name by default
        concurrency = 16
        prefetch = 64

    Raises :class:`~polybus.ConfigurationError` (naming file, line and key for the file) when a
    source holds an unknown key or a bad value.
    """

    model_config = SettingsConfigDict(
        env_prefix="POLYBUS_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    url: SecretStr | None = None
    """The broker URL (``POLYBUS_URL``); never shown with its password."""
    grace_period: float = Field(default=30.0, ge=0)
    """Seconds running handlers get to finish after a stop signal; the rest goes back unacked."""
    topics: dict[str, str] = Field(default_factory=dict)
    """Logical topic names (as written in the code) -> physical names on the broker."""
    subscriptions: dict[str, SubscriptionSettings] = Field(default_factory=dict)
    """Subscription name -> overrides of its ``concurrency`` and ``prefetch``."""
    processes: int = Field(default=1, ge=1)
    """Worker processes ``polybus run`` starts (competing consumers across processes)."""

    _config_file: Path | None = PrivateAttr(default=None)

    def __init__(self, _config_file: str | Path | None = None, **values: Any) -> None:
        """Read the sources; ``_config_file`` is the TOML file to use instead of the default search."""
        loading = _Loading(Path(_config_file) if _config_file is not None else None)
        token = _LOADING.set(loading)
        try:
            super().__init__(**values)
        except pydantic.ValidationError as exc:
            raise ConfigurationError(
                _describe(exc, "setting", hint=" (from the environment or options)")
            ) from None
        finally:
            _LOADING.reset(token)
        self._config_file = loading.used

    @property
    def config_file(self) -> Path | None:
        """The TOML file these settings were read from (``None``: none was found)."""
        return self._config_file

    def url_value(self) -> str | None:
        """The broker URL itself, password included: for ``polybus.connect()``, never for a log."""
        return self.url.get_secret_value() if self.url is not None else None

    def display_url(self) -> str | None:
        """The broker URL with any password replaced by ``***``."""
        url = self.url_value()
        return redact_url(url) if url is not None else None

    def overrides(self) -> dict[str, dict[str, int]]:
        """Subscription name -> the settings it overrides, for ``App.run(overrides=...)``."""
        return {
            name: sub.model_dump(exclude_none=True)
            for name, sub in self.subscriptions.items()
            if sub.model_dump(exclude_none=True)
        }

    def run_options(self) -> dict[str, Any]:
        """``grace_period``, ``topics`` and ``overrides`` as keyword arguments of ``App.run``."""
        return {"grace_period": self.grace_period, "topics": dict(self.topics), "overrides": self.overrides()}

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        loading = _LOADING.get() or _Loading(None)
        found = find_config_file(loading.requested)
        if found is None:
            return init_settings, env_settings
        loading.used, header = found
        return init_settings, env_settings, ConfigFileSource(settings_cls, found[0], header)


def find_config_file(requested: Path | None = None) -> tuple[Path, tuple[str, ...]] | None:
    """The TOML file to read and the table in it: the requested one, ``./polybus.toml``, or
    ``[tool.polybus]`` of ``./pyproject.toml``; ``None`` when there is none."""
    if requested is not None:
        if not requested.is_file():
            raise ConfigurationError(f"config file {str(requested)!r} not found")
        return requested, PYPROJECT_TABLE if requested.name == "pyproject.toml" else ()
    default = Path(CONFIG_FILE)
    if default.is_file():
        return default, ()
    pyproject = Path("pyproject.toml")
    if pyproject.is_file():
        data = _parse(pyproject, pyproject.read_text(encoding="utf-8"))
        if isinstance(data.get("tool"), dict) and "polybus" in data["tool"]:
            return pyproject, PYPROJECT_TABLE
    return None


class ConfigFileSource(TomlConfigSettingsSource):
    """pydantic-settings' TOML source, made strict: errors name the file, the line and the key."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path, table: tuple[str, ...] = ()) -> None:
        self.path = path
        self.text = ""
        super().__init__(settings_cls, toml_file=path, toml_table_header=table)
        if not isinstance(self.toml_data, dict):
            raise ConfigurationError(f"{path}: [{'.'.join(table)}] is not a table")
        try:
            _file_model(settings_cls).model_validate(self.toml_data)
        except pydantic.ValidationError as exc:
            raise ConfigurationError(self._describe(exc, table)) from None

    def _read_file(self, file_path: Any) -> dict[str, Any]:
        self.text = Path(file_path).read_text(encoding="utf-8")
        return _parse(Path(file_path), self.text)

    def _describe(self, exc: pydantic.ValidationError, table: tuple[str, ...]) -> str:
        lines = []
        for err in exc.errors(include_input=False, include_url=False):
            loc = [str(part) for part in err["loc"]]
            number = key_line(self.text, [*table, *loc])
            where = f"{self.path}:{number}" if number else str(self.path)
            key = ".".join(loc)
            if err["type"] == "extra_forbidden":
                lines.append(f"{where}: unknown key {key!r}")
            else:
                lines.append(f"{where}: {key}: {err['msg']}")
        return "\n".join(lines)


@functools.cache
def _file_model(settings_cls: type[BaseSettings]) -> type[BaseModel]:
    """The settings' fields as a plain strict model: the file alone validated, no source merged in."""
    fields: dict[str, Any] = {name: (f.annotation, f) for name, f in settings_cls.model_fields.items()}
    return pydantic.create_model("ConfigFile", __config__=ConfigDict(extra="forbid"), **fields)


def _parse(path: Path, text: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        at = re.search(r"\s*\(at line (\d+), column (\d+)\)", message)
        if at:
            message = message[: at.start()] + message[at.end() :]
            raise ConfigurationError(f"{path}:{at[1]}:{at[2]}: invalid TOML: {message}") from None
        raise ConfigurationError(f"{path}: invalid TOML: {message}") from None


def _describe(exc: pydantic.ValidationError, what: str, *, hint: str = "") -> str:
    return "\n".join(
        f"invalid {what} {'.'.join(map(str, err['loc'])) or 'value'}: {err['msg']}{hint}"
        for err in exc.errors(include_input=False, include_url=False)
    )


def key_line(text: str, path: Sequence[str]) -> int | None:
    """The 1-based line of ``text`` (TOML) that sets the key ``path``, or of its closest parent.

    Follows table headers (``[a.b]``), dotted and quoted keys; a key inside an inline table
    resolves to the line of that table. ``None`` when nothing on the path is found.
    """
    best_length, best_line = 0, None
    table: list[str] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            inner = line.lstrip("[")
            end = _outside_quotes(inner, "]")
            table = _split_key(inner[:end] if end >= 0 else inner)
            full = table
        else:
            equals = _outside_quotes(line, "=")
            if equals < 0:
                continue
            full = [*table, *_split_key(line[:equals])]
        if full == list(path):
            return number
        if len(full) > best_length and full == list(path[: len(full)]):
            best_length, best_line = len(full), number
    return best_line


def _outside_quotes(text: str, char: str) -> int:
    quote = ""
    for index, c in enumerate(text):
        if quote:
            if c == quote:
                quote = ""
        elif c in "\"'":
            quote = c
        elif c == char:
            return index
    return -1


def _split_key(key: str) -> list[str]:
    parts, rest = [], key.strip()
    while rest:
        dot = _outside_quotes(rest, ".")
        part, rest = (rest, "") if dot < 0 else (rest[:dot], rest[dot + 1 :])
        parts.append(part.strip().strip("\"'"))
    return parts
