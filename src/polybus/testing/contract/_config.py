"""ContractConfig: the knobs a broker turns in the contract suite (counts, timeouts, quirks)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

from polybus.testing._urls import password_in_userinfo

__all__ = ["ContractConfig"]


@dataclasses.dataclass(frozen=True)
class ContractConfig:
    """Knobs a broker may turn; the defaults suit a broker on localhost."""

    scale: float = 1.0
    """Multiplies the message counts of the volume cases (never below their minimum)."""
    receive_timeout: float = 10.0
    """How long a message that must arrive may take (covers rebalances and visibility timeouts)."""
    quiet_period: float = 1.5
    """How long to watch to be sure that a message does *not* arrive."""
    nack_delay: float = 2.0
    """The delay used by the ``nack(delay)`` cases."""
    partitioned: bool = False
    """Members of a group own partitions (Kafka): the next message of a partition whose member
    holds unsettled work waits for that member instead of going to another one."""
    other_processes: bool = True
    """Another process connecting to the same URL reaches the same broker (memory:// does not)."""
    lease: float | None = None
    """Seconds a consumer may hold a delivery without a sign of life before the broker hands it to
    another member, once ``lease_options`` are in the URL (the SIGKILL and keep-alive cases).
    ``None``: the broker has no such lease (RabbitMQ redelivers when the holder's connection drops)."""
    lease_options: Mapping[str, object] = dataclasses.field(default_factory=dict)
    """URL query options that make the lease ``lease`` seconds: ``{"visibility_timeout": 2}``."""
    password_url: Callable[[str, str], str | None] = password_in_userinfo
    """``(url, password) -> url`` of a broker that checks passwords, with that password in it, or
    ``None`` when the URL cannot carry one (memory://). Default: the password of the userinfo."""
    wrong_password_refused: bool = True
    """The broker of ``password_url`` refuses a wrong password (an emulator may accept any: moto)."""

    listener_sees_deletion: bool = True
    """A group-less listener's ``receive()`` raises NotFoundError once its topic is deleted. False
    where the broker does not tell a listener (its topic's deletion leaves it waiting, e.g. a Redis
    ``XREAD`` or a RabbitMQ exclusive queue); a group's consumer must raise it everywhere."""

    def count(self, n: int, minimum: int = 20) -> int:
        """``n`` scaled by :attr:`scale`, never below ``minimum``."""
        return max(minimum, int(n * self.scale))
