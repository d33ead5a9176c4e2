"""Raw writers of the bad-input scenario: each broker's own client library writes a message (any
bytes, any headers) into a polybus topic, the way a foreign producer would (see each adapter's
``tests/test_interop.py``). memory:// has no client of its own: it gets polybus's producer.

``writer(broker, topic, group)`` is an async context manager giving ``write(body, headers)``,
which returns True when the broker took the message and False when the raw client or the broker
refused it (a refusal is that library's business, not polybus's: the example is not counted).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import polybus

Write = Callable[[bytes, dict[str, str | bytes]], Awaitable[bool]]


def _text(value: str | bytes) -> str:
    return value if isinstance(value, str) else value.decode("utf-8", "surrogateescape")


def _bytes(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8", "surrogatepass")


@contextlib.asynccontextmanager
async def writer(
    name: str, url: str, broker: polybus.Broker, topic: polybus.Topic, queue: Any
) -> AsyncIterator[Write]:
    opener = WRITERS[name]
    async with opener(url, broker, topic, queue) as write:
        yield write


@contextlib.asynccontextmanager
async def _memory(url: str, broker: polybus.Broker, topic: polybus.Topic, queue: Any) -> AsyncIterator[Write]:
    async with topic.producer() as producer:

        async def write(body: bytes, headers: dict[str, str | bytes]) -> bool:
            try:
                text = {k: _text(v).encode("utf-8", "replace").decode() for k, v in headers.items()}
                await producer.send(polybus.Message(body, text))
            except polybus.PolybusError:
                return False
            return True

        yield write


@contextlib.asynccontextmanager
async def _redis(url: str, broker: polybus.Broker, topic: polybus.Topic, queue: Any) -> AsyncIterator[Write]:
    import redis.asyncio as raw_redis

    key = topic.key  # type: ignore[attr-defined]
    async with raw_redis.Redis.from_url(url.partition("?")[0]) as client:

        async def write(body: bytes, headers: dict[str, str | bytes]) -> bool:
            fields: dict[bytes, bytes] = {_bytes(k): _bytes(v) for k, v in headers.items()}
            fields.setdefault(b"body", body)
            try:
                await client.xadd(key, fields)  # type: ignore[arg-type]
            except raw_redis.RedisError:
                return False
            return True

        yield write


@contextlib.asynccontextmanager
async def _rabbitmq(
    url: str, broker: polybus.Broker, topic: polybus.Topic, queue: Any
) -> AsyncIterator[Write]:
    import aio_pika
    import aiormq

    connection = await aio_pika.connect(url.partition("?")[0])
    try:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(topic.name)

        async def write(body: bytes, headers: dict[str, str | bytes]) -> bool:
            nonlocal channel, exchange
            props: dict[str, Any] = {}
            table: dict[str, Any] = {}
            for name, value in headers.items():
                if name == "content-type":
                    props["content_type"] = _text(value)
                elif name == "polybus-id":
                    props["message_id"] = _text(value)
                elif name == "polybus-reply-to":
                    props["reply_to"] = _text(value)
                elif name == "polybus-correlation-id":
                    props["correlation_id"] = _text(value)
                table[name] = value
            try:
                await exchange.publish(aio_pika.Message(body, headers=table, **props), routing_key="")
            except (aio_pika.exceptions.AMQPError, aiormq.exceptions.AMQPError, ValueError, TypeError):
                if channel.is_closed:
                    channel = await connection.channel(publisher_confirms=True)
                    exchange = await channel.get_exchange(topic.name)
                return False
            return True

        yield write
    finally:
        await connection.close()


@contextlib.asynccontextmanager
async def _kafka(url: str, broker: polybus.Broker, topic: polybus.Topic, queue: Any) -> AsyncIterator[Write]:
    from aiokafka import AIOKafkaProducer
    from aiokafka import errors as kerrors

    producer = AIOKafkaProducer(
        bootstrap_servers=broker.settings.bootstrap_servers,  # type: ignore[attr-defined]
        acks="all",
        max_request_size=4 * 1024 * 1024,
    )
    await producer.start()
    try:

        async def write(body: bytes, headers: dict[str, str | bytes]) -> bool:
            pairs = [(k, _bytes(v)) for k, v in headers.items()]
            try:
                await producer.send_and_wait(topic.name, body, headers=pairs)
            except (kerrors.KafkaError, ValueError, TypeError):
                return False
            return True

        yield write
    finally:
        await producer.stop()


@contextlib.asynccontextmanager
async def _nats(url: str, broker: polybus.Broker, topic: polybus.Topic, queue: Any) -> AsyncIterator[Write]:
    import nats
    import nats.errors
    import nats.js.errors

    raw = await nats.connect(broker.settings.servers)  # type: ignore[attr-defined]
    js = raw.jetstream()
    subject = topic.subject  # type: ignore[attr-defined]
    try:

        async def write(body: bytes, headers: dict[str, str | bytes]) -> bool:
            text = {k: _text(v).encode("utf-8", "replace").decode() for k, v in headers.items()}
            try:
                ack = await js.publish(subject, body, headers=text, timeout=5)
            except (nats.errors.Error, nats.js.errors.Error, ValueError, TypeError):
                return False
            # a forged Nats-Msg-Id seen within the stream's duplicate window is dropped by JetStream
            # (the dedup capability): acknowledged as a duplicate, never stored, so never delivered
            return not ack.duplicate

        yield write
    finally:
        await raw.close()


@contextlib.asynccontextmanager
async def _sqs(url: str, broker: polybus.Broker, topic: polybus.Topic, queue: Any) -> AsyncIterator[Write]:
    import boto3
    import botocore.exceptions

    s = broker.settings  # type: ignore[attr-defined]
    client = boto3.client(
        "sqs",
        endpoint_url=s.endpoint_url,
        region_name=s.region or "us-east-1",
        aws_access_key_id=s.access_key_id,
        aws_secret_access_key=s.secret_access_key and s.secret_access_key.get_secret_value(),
    )
    queue_url = queue.url

    async def write(body: bytes, headers: dict[str, str | bytes]) -> bool:
        if not all(_SQS_NAME.fullmatch(name) for name in headers):
            return False  # AWS refuses the send; moto takes it, then fails every ReceiveMessage of the queue
        attributes: dict[str, Any] = {}
        for name, value in headers.items():
            if isinstance(value, bytes):
                attributes[name] = {"DataType": "Binary", "BinaryValue": value}
            else:
                attributes[name] = {"DataType": "String", "StringValue": value}
        params: dict[str, Any] = {"QueueUrl": queue_url, "MessageBody": body.decode("utf-8", "replace")}
        if attributes:
            params["MessageAttributes"] = attributes
        try:
            await asyncio.to_thread(client.send_message, **params)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, ValueError, TypeError):
            return False
        return True

    yield write


_SQS_NAME = re.compile(r"(?i)(?!aws\.|amazon\.)(?!\.)(?!.*\.\.)[A-Za-z0-9_.-]{1,256}(?<!\.)")
"""A message attribute name AWS accepts (docs/sqs.md: moto checks it only when receiving)."""

WRITERS: dict[str, Callable[..., contextlib.AbstractAsyncContextManager[Write]]] = {
    "memory": _memory,
    "redis": _redis,
    "rabbitmq": _rabbitmq,
    "kafka": _kafka,
    "nats": _nats,
    "sqs": _sqs,
}
