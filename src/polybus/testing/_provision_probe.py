"""Protocol handshakes that tell a live broker from a port that is merely open.

Each probe talks the broker's own protocol with its raw client library (aio-pika, redis-py,
nats-py, aiokafka, boto3) and returns a short description of the server's version, or raises
:class:`ProbeFailed` saying why not. The client libraries are test dependencies: they are imported
lazily, so importing this module needs none of them. Probes run in a private event loop in a
worker thread, so they work from sync code and from inside a running loop alike.

Imports nothing from polybus but ``polybus._settings``; never imports pytest.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import importlib.metadata
import logging
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any

from polybus._settings import redact_url

__all__ = ["ProbeFailed", "kafka_bootstrap", "probe", "sqs_endpoint"]

DEFAULT_TIMEOUT = 3.0


class ProbeFailed(Exception):
    """The address did not answer as the broker should; the message says what happened."""


def probe(name: str, url: str, timeout: float = DEFAULT_TIMEOUT) -> str:
    """Handshake with the ``name`` broker at ``url``; return its version description.

    Raises :class:`ProbeFailed` when nothing answers, something else answers, or the client
    library is missing. Never takes (much) longer than ``timeout``.
    """
    handshake = _HANDSHAKES.get(name)
    if handshake is None:
        raise ProbeFailed(f"no handshake for broker kind {name!r}")

    async def bounded() -> str:
        async with asyncio.timeout(timeout):
            return await handshake(url, timeout)

    pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"polybus-probe-{name}")
    try:
        return pool.submit(asyncio.run, bounded()).result(timeout + 5)
    except ProbeFailed:
        raise
    except ImportError as exc:
        raise ProbeFailed(f"client library missing ({exc.name}): install the dev dependency group") from exc
    except (TimeoutError, concurrent.futures.TimeoutError) as exc:
        raise ProbeFailed(f"no {name} handshake from {redact_url(url)} within {timeout:.0f}s") from exc
    except Exception as exc:
        raise ProbeFailed(f"{redact_url(url)} did not answer as {name}: {_describe(exc)}") from exc
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    kind = type(exc).__name__
    if text.startswith(f"{kind}: "):
        text = text[len(kind) + 2 :]
    return f"{kind}: {text}"[:200] if text else kind


# -- URL conversions shared with the benchmark harness --------------------------------------------


def kafka_bootstrap(url: str) -> str:
    """``kafka://h1:p1,h2:p2`` -> ``h1:p1,h2:p2`` (the default port is 9092)."""
    netloc = url.split("://", 1)[-1].split("/", 1)[0].split("?", 1)[0].rpartition("@")[2]
    hosts = [h if ":" in h else f"{h}:9092" for h in netloc.split(",") if h]
    if not hosts:
        raise ProbeFailed(f"no host in {redact_url(url)!r}")
    return ",".join(hosts)


def sqs_endpoint(url: str) -> dict[str, Any]:
    """boto3 client arguments for ``sqs://KEY:SECRET@host:port?region=R&tls=false``."""
    parts = urllib.parse.urlsplit(url)
    query = dict(urllib.parse.parse_qsl(parts.query))
    tls = query.get("tls", "true").lower() not in ("0", "false", "no", "off")
    args: dict[str, Any] = {"region_name": query.get("region", "us-east-1")}
    if parts.hostname:
        port = f":{parts.port}" if parts.port else ""
        args["endpoint_url"] = f"{'https' if tls else 'http'}://{parts.hostname}{port}"
    if parts.username:
        args["aws_access_key_id"] = urllib.parse.unquote(parts.username)
        args["aws_secret_access_key"] = urllib.parse.unquote(parts.password or "")
    return args


# -- the handshakes ------------------------------------------------------------------------------


async def _rabbitmq(url: str, timeout: float) -> str:
    import aio_pika

    _quiet_probe_logs("aiormq.connection", "aio_pika.connection")
    connection = await aio_pika.connect(url, timeout=timeout)
    try:
        channel = await connection.channel()
        await channel.close()
        transport = connection.transport
        if transport is None:
            raise ProbeFailed("connection closed right after opening")
        props = transport.connection.server_properties
        product, version = props.get("product", "RabbitMQ"), props.get("version", "?")
        return f"{_text(product)} {_text(version)}"
    finally:
        await connection.close()


async def _redis(url: str, timeout: float) -> str:
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        if not await client.ping():
            raise ProbeFailed("PING did not return PONG")
        info = await client.info("server")
        return f"Redis {info.get('redis_version', '?')}"
    finally:
        await client.aclose()


async def _nats(url: str, timeout: float) -> str:
    import nats

    async def quiet(*_: Any) -> None:
        return None

    client = await nats.connect(
        servers=[url],
        connect_timeout=timeout,
        allow_reconnect=False,
        max_reconnect_attempts=0,
        error_cb=quiet,
        disconnected_cb=quiet,
        closed_cb=quiet,
    )
    try:
        account = await client.jetstream(timeout=timeout).account_info()
        del account  # answering at all proves JetStream is enabled
        v = client.connected_server_version
        return f"nats-server {v.major}.{v.minor}.{v.patch} (JetStream)"
    finally:
        with contextlib.suppress(Exception):
            await client.close()


async def _kafka(url: str, timeout: float) -> str:
    from aiokafka.client import AIOKafkaClient

    _quiet_probe_logs("aiokafka", "aiokafka.client", "aiokafka.conn")
    client = AIOKafkaClient(
        bootstrap_servers=kafka_bootstrap(url),
        request_timeout_ms=int(timeout * 1000),
        metadata_max_age_ms=60_000,
    )
    try:
        await client.bootstrap()
        brokers = client.cluster.brokers()
        if not brokers:
            raise ProbeFailed("metadata response lists no brokers")
        return f"Kafka protocol ({len(brokers)} broker(s))"
    finally:
        await client.close()


async def _sqs(url: str, timeout: float) -> str:
    return await asyncio.to_thread(_sqs_sync, url, timeout)


def _sqs_sync(url: str, timeout: float) -> str:
    import boto3
    from botocore.config import Config

    config = Config(
        connect_timeout=timeout, read_timeout=timeout, retries={"max_attempts": 1, "mode": "standard"}
    )
    client = boto3.session.Session().client("sqs", config=config, **sqs_endpoint(url))
    try:
        response = client.list_queues(MaxResults=1)
        server = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("server", "")
        return f"SQS API ({server or 'unknown server'})"
    finally:
        client.close()


class _ProbeThreadFilter(logging.Filter):
    """Drops the connection errors a failing probe makes a client library log: they are expected."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.threadName or "").startswith("polybus-probe-")


_FILTER = _ProbeThreadFilter()


def _quiet_probe_logs(*loggers: str) -> None:
    for name in loggers:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def package_version(dist: str) -> str | None:
    """The installed version of the distribution ``dist``, or ``None``."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


_HANDSHAKES: dict[str, Callable[[str, float], Awaitable[str]]] = {
    "rabbitmq": _rabbitmq,
    "redis": _redis,
    "nats": _nats,
    "kafka": _kafka,
    "sqs": _sqs,
}
