"""URLs, settings and connect(): clear errors, and passwords that never show."""

import pytest

import polybus
from polybus import _registry
from polybus._settings import describe_error, redact_url

CANARY = "Canary-Pw-91c2"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"amqp://guest:{CANARY}@host:5672/vh", "amqp://guest:***@host:5672/vh"),
        ("redis://host:6379/0", "redis://host:6379/0"),
        (f"redis://:{CANARY}@host", "redis://:***@host"),
        (f"sqs://host:4566?region=eu&secret_key={CANARY}", "sqs://host:4566?region=eu&secret_key=***"),
        ("nats://user@host", "nats://user@host"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert CANARY not in redact_url(url)


def test_unknown_scheme_names_installed_schemes_and_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    # as on a machine where polybus is installed without the kafka extra
    installed = {k: v for k, v in _registry._entry_points().items() if not k.startswith("kafka")}
    monkeypatch.setattr(_registry, "_entry_points", lambda: installed)
    with pytest.raises(polybus.UnknownSchemeError) as info:
        polybus.connect(f"kafka+ssl://u:{CANARY}@broker:9093")
    text = str(info.value)
    assert 'pip install "polybus[kafka]"' in text
    assert "memory://" in text
    assert CANARY not in text


def test_scheme_nobody_knows() -> None:
    with pytest.raises(polybus.UnknownSchemeError, match="is the adapter that provides it installed"):
        polybus.connect("carrierpigeon://loft")


@pytest.mark.parametrize("url", ["", "localhost:6379", f"redis://u:{CANARY}@host:notaport"])
def test_malformed_urls_raise_configuration_error(url: str) -> None:
    with pytest.raises(polybus.ConfigurationError) as info:
        polybus.connect(url)
    assert CANARY not in str(info.value)


def test_connect_reads_polybus_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POLYBUS_URL", "memory://from-env")
    broker = polybus.connect()
    assert broker.display_url == "memory://from-env"
    monkeypatch.delenv("POLYBUS_URL")
    with pytest.raises(polybus.ConfigurationError, match="POLYBUS_URL is not set"):
        polybus.connect()


def test_bad_options_are_configuration_errors_without_input_values() -> None:
    with pytest.raises(polybus.ConfigurationError) as info:
        polybus.connect(f"memory://x?max_message_size=-5&token={CANARY}")
    text = str(info.value)
    assert "max_message_size" in text
    assert CANARY not in text
    with pytest.raises(polybus.ConfigurationError):
        polybus.connect("memory://", prefetch="many")


def test_describe_error_scrubs_the_password() -> None:
    url = f"amqp://u:{CANARY}@h/"
    assert CANARY not in describe_error(RuntimeError(f"failed with {url}"), url)


def test_capabilities_require() -> None:
    caps = polybus.connect("memory://").capabilities
    assert caps.require("delayed_nack") is polybus.Support.NATIVE
    with pytest.raises(polybus.UnsupportedCapabilityError, match="PriorityQueue needs capability 'priority'"):
        caps.require("priority", need="PriorityQueue")
    with pytest.raises(ValueError, match="not a capability"):
        caps.require("max_message_size")
    assert caps.table()["max_message_size"] == str(1024 * 1024)
    with pytest.raises(AttributeError):
        caps.fan_out = polybus.Support.UNSUPPORTED  # type: ignore[misc]
