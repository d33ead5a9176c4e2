"""The last resort of broker provisioning: a container, when a Docker engine answers.

Uses testcontainers' generic ``DockerContainer`` (no per-broker module, so no extra client
packages) and the same handshakes as every other path to know when the broker is ready. The
container's port is bound to a free host port chosen first, because Kafka must advertise the
address clients reach it on. Images can be overridden with ``POLYBUS_<BROKER>_IMAGE``.
testcontainers' reaper removes the containers if this process dies. Never imports pytest.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

from polybus.testing._provision_local import free_port
from polybus.testing._provision_probe import ProbeFailed, probe

__all__ = ["ContainerSpec", "RunningContainer", "container_spec", "docker_answers", "start_container"]

READY_TIMEOUT = 180.0

IMAGES = {
    "rabbitmq": "rabbitmq:3.13-alpine",
    "redis": "redis:7-alpine",
    "nats": "nats:2.10-alpine",
    "kafka": "apache/kafka:3.8.0",
    "sqs": "localstack/localstack:3.8",
}


@dataclasses.dataclass(frozen=True)
class ContainerSpec:
    """What to run for one broker: image, the port inside, environment, command, and the URL."""

    image: str
    port: int
    url: str
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    command: str | None = None


@dataclasses.dataclass
class RunningContainer:
    """A started container and the broker URL it serves."""

    name: str
    url: str
    image: str
    version: str
    handle: Any = dataclasses.field(repr=False)

    def stop(self) -> None:
        """Stop and remove the container; idempotent."""
        handle, self.handle = self.handle, None
        if handle is not None:
            try:
                handle.stop()
            except Exception:  # already gone: nothing left to stop
                return


def container_spec(name: str, host: str, host_port: int) -> ContainerSpec:
    """The container that serves a ``name`` broker at ``host:host_port``."""
    image = os.environ.get(f"POLYBUS_{name.upper()}_IMAGE") or IMAGES[name]
    address = f"{host}:{host_port}"
    if name == "rabbitmq":
        return ContainerSpec(image, 5672, f"amqp://guest:guest@{address}/")
    if name == "redis":
        return ContainerSpec(image, 6379, f"redis://{address}/0")
    if name == "nats":
        return ContainerSpec(image, 4222, f"nats://{address}", command="-js")
    if name == "sqs":
        url = f"sqs://test:test@{address}?region=us-east-1&tls=false"
        return ContainerSpec(image, 4566, url, env={"SERVICES": "sqs,sns"})
    if name == "kafka":  # single-node KRaft, advertising the host-side address
        env = {
            "KAFKA_NODE_ID": "1",
            "KAFKA_PROCESS_ROLES": "broker,controller",
            "KAFKA_LISTENERS": "PLAINTEXT://:9092,CONTROLLER://:9093",
            "KAFKA_ADVERTISED_LISTENERS": f"PLAINTEXT://{address}",
            "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
            "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "KAFKA_CONTROLLER_QUORUM_VOTERS": "1@localhost:9093",
            "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
            "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
            "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
            "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
        }
        return ContainerSpec(image, 9092, f"kafka://{address}", env=env)
    raise ValueError(f"no container for broker kind {name!r}")


def docker_answers(timeout: float = 3.0) -> bool:
    """True when a Docker engine answers a ping (``DOCKER_HOST`` or the default socket)."""
    try:
        import docker  # type: ignore[import-untyped]
    except ImportError:
        return False
    try:
        client = docker.from_env(timeout=int(max(1, timeout)))
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # no engine, no permission, bad DOCKER_HOST: all mean "no"
        return False


def start_container(name: str) -> RunningContainer:
    """Start a ``name`` broker container and return once its handshake succeeds.

    Raises ``RuntimeError`` saying why when the container does not become ready.
    """
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.docker_client import DockerClient

    host = DockerClient().host()
    host_port = free_port()
    spec = container_spec(name, host, host_port)
    container = DockerContainer(spec.image).with_bind_ports(spec.port, host_port)
    for key, value in spec.env.items():
        container = container.with_env(key, value)
    if spec.command:
        container = container.with_command(spec.command)
    container.start()
    running = RunningContainer(name, spec.url, spec.image, "", container)
    deadline = time.monotonic() + READY_TIMEOUT
    reason = "no answer yet"
    while time.monotonic() < deadline:
        try:
            running.version = probe(name, spec.url, timeout=3.0)
            return running
        except ProbeFailed as exc:
            reason = str(exc)
            time.sleep(1.0)
    running.stop()
    raise RuntimeError(f"container {spec.image} did not answer within {READY_TIMEOUT:.0f}s: {reason}")
