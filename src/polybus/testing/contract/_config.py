"""ContractConfig: the knobs a broker turns in the contract suite (counts, timeouts, quirks)."""

from __future__ import annotations

import dataclasses

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

    listener_sees_deletion: bool = True
    """A group-less listener's ``receive()`` raises NotFoundError once its topic is deleted. False
    where the broker does not tell a listener (its topic's deletion leaves it waiting, e.g. a Redis
    ``XREAD`` or a RabbitMQ exclusive queue); a group's consumer must raise it everywhere."""

    def count(self, n: int, minimum: int = 20) -> int:
        """``n`` scaled by :attr:`scale`, never below ``minimum``."""
        return max(minimum, int(n * self.scale))
