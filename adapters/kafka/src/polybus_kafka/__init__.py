"""polybus adapter for Apache Kafka: ``kafka://host:9092`` and ``kafka+ssl://host:9093``.

Topic = Kafka topic, group = consumer group, ack = commit of contiguous acked offsets,
``nack(delay)`` = a copy on the group's retry topic with an attempt header and a due time.
"""

from polybus_kafka._broker import KafkaBroker, KafkaTopic
from polybus_kafka._consumer import KafkaConsumer
from polybus_kafka._producer import KafkaProducer
from polybus_kafka._settings import KafkaSettings

__all__ = ["KafkaBroker", "KafkaConsumer", "KafkaProducer", "KafkaSettings", "KafkaTopic"]
