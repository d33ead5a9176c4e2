"""polybus-nats: the NATS JetStream adapter of polybus, for ``nats://`` and ``tls://`` URLs.

    async with polybus.connect("nats://127.0.0.1:4222") as broker: ...

A topic is a JetStream stream, a group a durable pull consumer with explicit acks. See
``docs/nats.md`` for the settings, the mapping and the wire format.
"""

from polybus_nats._broker import NatsBroker, NatsTopic, nats_capabilities
from polybus_nats._consumer import NatsConsumer
from polybus_nats._producer import NatsProducer
from polybus_nats._settings import NatsSettings

__all__ = ["NatsBroker", "NatsConsumer", "NatsProducer", "NatsSettings", "NatsTopic", "nats_capabilities"]
