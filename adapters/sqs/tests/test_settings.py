"""URL parsing, settings and the wire format: no broker needed."""

from __future__ import annotations

import logging

import pytest
from polybus_sqs import SqsBroker, SqsSettings, _wire

import polybus
from polybus import ConfigurationError, Message

CANARY = "Canary-Secret-9d2e"


def test_emulator_url_gives_endpoint_region_and_credentials() -> None:
    s = SqsSettings.from_url(f"sqs://AKIDEXAMPLE:{CANARY}@127.0.0.1:4566?region=eu-west-1&tls=false")
    assert s.endpoint_url == "http://127.0.0.1:4566"
    assert s.region == "eu-west-1"
    assert s.access_key_id == "AKIDEXAMPLE"
    assert s.secret_access_key is not None and s.secret_access_key.get_secret_value() == CANARY
    assert CANARY not in repr(s) and CANARY not in str(s)


def test_aws_url_has_no_endpoint_and_tls_by_default() -> None:
    s = SqsSettings.from_url("sqs://?region=us-west-2&visibility_timeout=45&fifo=true&prefix=prod-")
    assert s.endpoint_url is None and s.tls is True
    assert (s.visibility_timeout, s.fifo, s.prefix) == (45, True, "prod-")
    assert SqsSettings.from_url("sqs://localhost:4566").endpoint_url == "https://localhost:4566"


def test_percent_encoded_secret_and_keyword_overrides() -> None:
    s = SqsSettings.from_url("sqs://AKID:a%2Fb%2Bc@h:1?tls=false&visibility_timeout=10", visibility_timeout=5)
    assert s.secret_access_key is not None and s.secret_access_key.get_secret_value() == "a/b+c"
    assert s.visibility_timeout == 5


def test_broker_repr_and_display_url_hide_the_secret() -> None:
    broker = polybus.connect(f"sqs://AKID:{CANARY}@127.0.0.1:4566?region=us-east-1&tls=false")
    assert isinstance(broker, SqsBroker)
    assert CANARY not in repr(broker) and CANARY not in broker.display_url
    assert broker.display_url == "sqs://AKID:***@127.0.0.1:4566?region=us-east-1&tls=false"


def test_invalid_option_is_a_configuration_error_without_the_secret(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ConfigurationError) as info:
        polybus.connect(f"sqs://AKID:{CANARY}@h:1?visibility_timeout=never")
    assert "visibility_timeout" in str(info.value)
    assert CANARY not in str(info.value) and CANARY not in caplog.text


def test_capabilities_follow_the_settings() -> None:
    plain = SqsBroker.from_url("sqs://h:1")
    fifo = SqsBroker.from_url("sqs://h:1?fifo=true&dead_letter_after=3&max_message_size=1048576")
    assert not plain.capabilities.ordering_per_key
    assert plain.capabilities.dead_letter is polybus.Support.EMULATED  # polybus_patterns: a topic per group
    assert plain.capabilities.max_message_size == 256 * 1024
    assert fifo.capabilities.ordering_per_key and fifo.capabilities.dedup and fifo.capabilities.dead_letter
    assert fifo.capabilities.max_message_size == 1024 * 1024


def test_wire_roundtrip_of_awkward_bodies_and_headers() -> None:
    headers = {f"h{i}": str(i) for i in range(12)} | {"with space": "x", "empty": "", "AWS.trace": "y"}
    for body in (b"", b"plain", "héllo".encode(), b"\x00\x01\xff", b"bell\x07"):
        message = Message(body=body, headers=headers, key="k")
        text, attributes, size = _wire.encode(message)
        assert len(attributes) <= 10
        assert size >= len(text)
        flat = _wire.decode_attributes(attributes)
        got_body, got_headers, key, mid = _wire.decode(text, flat)
        assert (got_body, got_headers, key, mid) == (body, headers, "k", message.id)


def test_reconnect_policy_is_a_setting() -> None:
    policy = polybus.ReconnectPolicy(initial=0.2, give_up_after=5)
    broker = polybus.connect("sqs://h:1?tls=false", reconnect=policy)
    assert isinstance(broker, SqsBroker)
    assert broker.settings.reconnect == policy and broker.reconnect is policy
    assert SqsSettings().reconnect == polybus.ReconnectPolicy()


def test_keyword_tls_environment_and_reconnect_options(monkeypatch: pytest.MonkeyPatch) -> None:
    assert SqsSettings.from_url("sqs://h:1", tls=False).endpoint_url == "http://h:1"
    monkeypatch.setenv("POLYBUS_SQS_VISIBILITY_TIMEOUT", "7")
    monkeypatch.setenv("POLYBUS_SQS_TLS", "false")
    s = SqsSettings.from_url("sqs://h:1?reconnect_initial=0.5&reconnect_give_up_after=3&verify=false")
    assert (s.visibility_timeout, s.endpoint_url, s.verify) == (7, "http://h:1", False)
    assert (s.reconnect.initial, s.reconnect.give_up_after) == (0.5, 3)
    assert SqsSettings.from_url("sqs://h:1", visibility_timeout=9).visibility_timeout == 9  # keywords win
