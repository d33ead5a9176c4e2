"""Pins the public names: adding or removing one is a deliberate change to this list."""

import polybus

EXPECTED = {
    "CAUSATION_HEADER",
    "CONTENT_TYPE",
    "CORRELATION_HEADER",
    "ERROR_HEADER",
    "ERROR_TYPE_HEADER",
    "GROUP_HEADER",
    "ID_HEADER",
    "REPLY_TO_HEADER",
    "RESEND_HEADER",
    "App",
    "Broker",
    "BrokerConnectionError",
    "Capabilities",
    "ClosedError",
    "ConfigurationError",
    "Consumer",
    "DecodeError",
    "Delivery",
    "DeliveryStateError",
    "EncodeError",
    "GroupStats",
    "Handler",
    "Inbox",
    "Message",
    "MessageTooLargeError",
    "Middleware",
    "NotFoundError",
    "OperationTimeout",
    "Outcome",
    "PolybusError",
    "PolybusSettings",
    "Producer",
    "PublishError",
    "ReconnectPolicy",
    "ServiceSettings",
    "Support",
    "Topic",
    "TopicStats",
    "UnknownSchemeError",
    "UnsupportedCapabilityError",
    "__version__",
    "compose",
    "connect",
    "installed_schemes",
    "redact_url",
    "run_consumer",
}


def test_all_is_pinned() -> None:
    assert set(polybus.__all__) == EXPECTED


def test_every_exported_name_exists_and_is_documented() -> None:
    for name in polybus.__all__:
        obj = getattr(polybus, name)
        if callable(obj) and not name.startswith("_") and name not in {"Handler", "Middleware"}:
            assert obj.__doc__, f"polybus.{name} has no docstring"


def test_every_error_derives_from_the_root() -> None:
    errors = [getattr(polybus, n) for n in polybus.__all__ if n.endswith(("Error", "Timeout"))]
    assert len(errors) >= 12
    for error in errors:
        assert issubclass(error, polybus.PolybusError), error
    assert issubclass(polybus.OperationTimeout, TimeoutError)
    assert issubclass(polybus.UnknownSchemeError, polybus.ConfigurationError)
