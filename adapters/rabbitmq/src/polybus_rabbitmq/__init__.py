"""polybus-rabbitmq: the RabbitMQ adapter of polybus (``amqp://`` and ``amqps://``), built on aio-pika.

    async with polybus.connect("amqp://guest:guest@localhost:5672/") as broker:
        ...

A topic is a durable fanout exchange, a group a durable (quorum) queue bound to it, a consumer
without a group an exclusive auto-delete queue. See docs/rabbitmq.md for the mapping and wire format.
"""

from polybus_rabbitmq._broker import RabbitBroker
from polybus_rabbitmq._consumer import RabbitConsumer
from polybus_rabbitmq._producer import RabbitProducer
from polybus_rabbitmq._settings import RabbitSettings
from polybus_rabbitmq._topic import RabbitTopic

__all__ = ["RabbitBroker", "RabbitConsumer", "RabbitProducer", "RabbitSettings", "RabbitTopic"]
