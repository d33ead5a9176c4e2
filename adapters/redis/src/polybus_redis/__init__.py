"""polybus adapter for Redis Streams: ``redis://`` and ``rediss://`` URLs, built on redis-py (asyncio).

    async with polybus.connect("redis://localhost:6379/0?visibility_timeout=30") as broker:
        ...

A topic is a stream, a group is a consumer group; see ``docs/redis.md`` for the mapping, the
wire format and the options (:class:`RedisSettings`).
"""

from polybus_redis._broker import RedisBroker, RedisTopic
from polybus_redis._consumer import RedisConsumer
from polybus_redis._listener import RedisListener
from polybus_redis._producer import RedisProducer
from polybus_redis._settings import RedisSettings

__all__ = ["RedisBroker", "RedisConsumer", "RedisListener", "RedisProducer", "RedisSettings", "RedisTopic"]
