"""URL parsing, settings validation, the password staying secret, and the delay buckets (no broker)."""

from __future__ import annotations

import ssl

import pytest
from polybus_rabbitmq import RabbitBroker, RabbitSettings
from polybus_rabbitmq._wire import delay_bucket, group_queue_name

import polybus

CANARY = "Canary-Pw-5e1d"


def test_url_maps_onto_settings() -> None:
    s = RabbitSettings.from_url(f"amqp://alice:{CANARY}@rabbit.example:5673/orders?prefetch=7&heartbeat=5")
    assert (s.host, s.port, s.vhost, s.username) == ("rabbit.example", 5673, "orders", "alice")
    assert s.password.get_secret_value() == CANARY
    assert (s.prefetch, s.heartbeat, s.tls) == (7, 5, False)


def test_defaults_and_vhost_forms() -> None:
    s = RabbitSettings.from_url("amqp://localhost")
    assert (s.port, s.vhost, s.username) == (5672, "/", "guest")
    assert (s.queue_type, s.on_unroutable) == ("auto", "drop")
    assert RabbitSettings.from_url("amqp://h/").vhost == "/"
    assert RabbitSettings.from_url("amqp://h/%2Fprod").vhost == "/prod"
    assert RabbitSettings.from_url("amqp://h/a%20b").vhost == "a b"


def test_amqps_turns_tls_on_with_verification() -> None:
    s = RabbitSettings.from_url("amqps://u:p@h")
    assert s.tls and s.port == 5671
    context = s.ssl_context()
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    loose = RabbitSettings.from_url("amqps://u:p@h?tls_verify=false").ssl_context()
    assert loose is not None and loose.verify_mode == ssl.CERT_NONE
    assert RabbitSettings.from_url("amqp://h").ssl_context() is None


def test_missing_tls_files_raise_configuration_error() -> None:
    s = RabbitSettings.from_url("amqps://h?tls_ca_file=/nonexistent/ca.pem")
    with pytest.raises(polybus.ConfigurationError):
        s.ssl_context()


def test_keyword_options_override_the_url() -> None:
    broker = polybus.connect("amqp://h?prefetch=5", prefetch=9, queue_type="classic")
    assert isinstance(broker, RabbitBroker)
    assert broker.default_prefetch == 9
    assert broker.capabilities.delivery_count is polybus.Support.EMULATED


def test_settings_and_a_bad_prefetch_hide_the_password() -> None:
    """The broker's repr and an unknown option are contract cases; these are the rabbitmq settings."""
    broker = polybus.connect(f"amqp://alice:{CANARY}@h:5672/")
    assert isinstance(broker, RabbitBroker)
    assert CANARY not in repr(broker.settings) and CANARY not in str(broker.settings)
    with pytest.raises(polybus.ConfigurationError) as info:
        polybus.connect(f"amqp://alice:{CANARY}@h/?prefetch=-1&bogus=1")
    assert CANARY not in str(info.value)
    assert "prefetch" in str(info.value) and "bogus" in str(info.value)


def test_both_schemes_are_registered() -> None:
    assert {"amqp", "amqps"} <= set(polybus.installed_schemes())
    assert isinstance(polybus.connect("amqps://h"), RabbitBroker)


def test_capabilities_are_declared_honestly() -> None:
    caps = polybus.connect("amqp://h").capabilities
    native, emulated = polybus.Support.NATIVE, polybus.Support.EMULATED
    unsupported = polybus.Support.UNSUPPORTED
    assert caps.fan_out is native and caps.competing_consumers is native
    assert caps.delayed_nack is emulated and caps.delivery_count is native
    assert caps.replay is unsupported and caps.dedup is unsupported and caps.priority is unsupported
    assert caps.max_message_size == 16 * 1024 * 1024


@pytest.mark.parametrize(
    ("delay", "ms"),
    [(0.0001, 1), (0.05, 50), (0.099, 99), (0.1234, 130), (1.0, 1000), (2.0, 2000), (2.01, 2100)],
)
def test_delay_buckets_round_up_to_two_digits(delay: float, ms: int) -> None:
    assert delay_bucket(delay) == ms
    assert delay_bucket(delay) >= delay * 1000  # never early
    assert delay_bucket(delay) <= max(1, delay * 1000) * 1.1 + 1  # at most 10% late


def test_delay_beyond_rabbitmq_ttl_is_refused() -> None:
    with pytest.raises(ValueError, match="TTL"):
        delay_bucket(60 * 24 * 3600)


def test_group_queue_names_fit_amqp() -> None:
    assert group_queue_name("orders", "billing") == "orders.billing"
    long = group_queue_name("t" * 200, "g" * 200)
    assert len(long) <= 255
    assert long != group_queue_name("t" * 200, "g" * 199 + "h")


def test_exchange_names_past_what_pamqp_writes_are_shortened_by_a_digest() -> None:
    from polybus_rabbitmq._wire import MAX_EXCHANGE_NAME, exchange_name

    assert exchange_name("orders") == "orders"
    assert exchange_name("t" * MAX_EXCHANGE_NAME) == "t" * MAX_EXCHANGE_NAME
    long_a, long_b = "a" * 199 + "1", "a" * 199 + "2"
    assert len(exchange_name(long_a)) == MAX_EXCHANGE_NAME
    assert exchange_name(long_a) != exchange_name(long_b)
    assert exchange_name(long_a).startswith("a" * 110 + ".")
