"""URL and settings: TLS and SASL reachable from the URL, secrets never shown."""

from __future__ import annotations

import pytest
from polybus_kafka import KafkaBroker, KafkaSettings

import polybus
from polybus.testing import unique_name

CANARY = "Canary-Kafka-Pw-4d1c"


def test_url_maps_to_client_options() -> None:
    s = KafkaSettings.from_url(
        "kafka://alice:s3cr%40t@k1:9093?bootstrap_servers=k2:9093,k3:9093&partitions=3"
    )
    assert s.bootstrap_servers == ["k1:9093", "k2:9093", "k3:9093"]
    assert s.partitions == 3
    options = s.client_options()
    assert options["security_protocol"] == "SASL_PLAINTEXT"
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == ("alice", "s3cr@t")
    tls = KafkaSettings.from_url("kafka+ssl://k1?sasl_mechanism=SCRAM-SHA-512")
    assert tls.client_options()["security_protocol"] == "SSL" and tls.bootstrap_servers == ["k1:9092"]
    assert KafkaSettings.from_url("kafka+ssl://u:p@k1").client_options()["security_protocol"] == "SASL_SSL"
    assert KafkaSettings.from_url("kafka://k1").client_options()["security_protocol"] == "PLAINTEXT"


def test_settings_and_a_bad_partitions_value_hide_the_password() -> None:
    """The broker's repr and an unknown option are contract cases; these are the kafka settings."""
    url = f"kafka://bob:{CANARY}@127.0.0.1:9092"
    broker = polybus.connect(url)
    assert isinstance(broker, KafkaBroker)
    assert CANARY not in repr(broker.settings) and CANARY not in str(broker.settings)
    with pytest.raises(polybus.ConfigurationError) as info:
        polybus.connect(url + "?partitions=many")
    assert CANARY not in str(info.value) and "partitions" in str(info.value)


async def test_capabilities_are_declared(polybus_url: str) -> None:
    async with polybus.connect(polybus_url) as broker:
        caps = broker.capabilities
    assert caps.delayed_nack is polybus.Support.EMULATED
    assert caps.delivery_count is polybus.Support.EMULATED
    assert caps.ordering_per_key is polybus.Support.NATIVE
    assert caps.max_message_size == 1_000_000


async def test_a_message_of_exactly_the_declared_limit_is_accepted(polybus_url: str) -> None:
    async with polybus.connect(polybus_url) as broker:
        limit = broker.capabilities.max_message_size
        assert limit is not None
        topic = broker.topic(unique_name("limit"))
        async with topic.consumer(unique_name("g")) as consumer, topic.producer() as producer:
            message = polybus.Message(body=b"", headers={"h": "v"})
            message.body = b"x" * (limit - message.size)
            assert message.size == limit
            await producer.send_many([message])
            d = await consumer.receive(timeout=20)
            assert d is not None and len(d.body) == len(message.body)
            await d.ack()
