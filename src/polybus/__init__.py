"""polybus: one asyncio messaging API for RabbitMQ, Kafka, SQS, NATS JetStream, Redis Streams and memory.

    async with polybus.connect("memory://") as broker:
        topic = broker.topic("orders")
        async with topic.consumer("billing") as consumer, topic.producer() as producer:
            await producer.send({"order": 1})
            delivery = await consumer.receive(timeout=5)
            await delivery.ack()

The public names are re-exported here; implementation lives in private modules.
"""

from polybus._app import App, Handler, Middleware, compose, run_consumer
from polybus._broker import Broker
from polybus._capabilities import Capabilities, Support
from polybus._consumer import Consumer
from polybus._delivery import Delivery, Outcome
from polybus._errors import (
    BrokerConnectionError,
    ClosedError,
    ConfigurationError,
    DecodeError,
    DeliveryStateError,
    EncodeError,
    MessageTooLargeError,
    NotFoundError,
    OperationTimeout,
    PolybusError,
    PublishError,
    UnknownSchemeError,
    UnsupportedCapabilityError,
)
from polybus._message import CONTENT_TYPE, GROUP_HEADER, ID_HEADER, RESEND_HEADER, Message
from polybus._producer import Producer
from polybus._reconnect import ReconnectPolicy
from polybus._registry import connect, installed_schemes
from polybus._reply import (
    CAUSATION_HEADER,
    CORRELATION_HEADER,
    ERROR_HEADER,
    ERROR_TYPE_HEADER,
    REPLY_TO_HEADER,
    Inbox,
)
from polybus._service_settings import ServiceSettings
from polybus._settings import PolybusSettings, redact_url
from polybus._topic import GroupStats, Topic, TopicStats

__version__ = "0.1.0"

__all__ = [
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
]
