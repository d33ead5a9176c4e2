"""Fan-out: declare a topology before traffic, and send one message to a list of topics.

A group receives every message sent *after* it exists; a message sent before its group was
created is not delivered to it (on most brokers it is not even kept). A service that starts a
moment after its producer therefore misses the first messages, unless the groups were created
first. :func:`declare` creates them (and the topics) up front, from an :class:`polybus.App` or a
plain mapping ``topic -> groups``; it is what a producer, a deployment step or a test runs before
the first publish. Creating a group is joining it once: the group outlives the consumer that made
it, on every broker (a case of the contract suite).

:class:`RecipientList` sends one message to several topics at once and returns once every broker
confirmed it; when some topics fail, :class:`RecipientListError` names them and the others stay
sent (at-least-once: retry the failed ones with the same message, which keeps its id).

Imports ``polybus`` only (the public API; and ``polybus_patterns._lifecycle``), never an adapter.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Collection, Coroutine, Iterable, Mapping
from types import MappingProxyType
from typing import Any

import polybus
from polybus_patterns._lifecycle import AsyncContext

__all__ = ["RecipientList", "RecipientListError", "declare", "send_to_all"]


async def declare(
    broker: polybus.Broker,
    topology: polybus.App | Mapping[str, Iterable[str]],
    *,
    topics: Mapping[str, str] | None = None,
) -> None:
    """Create every topic and group of ``topology`` on ``broker``, so none misses a message sent later.

    ``topology`` is an :class:`polybus.App` (each subscription's group is joined and each
    ``publish_to`` topic ensured, by :meth:`polybus.App.start`, then the consumers are closed) or a
    mapping ``topic -> groups`` (``{"orders": ["billing", "mailer"]}``; a topic with no groups is
    only created; a single group may be given as a str). ``topics`` maps the logical names used in
    code to physical ones, as in :meth:`polybus.App.run`. Idempotent: declaring what exists
    changes nothing. A subscription without a group is a listener and has nothing to declare.
    """
    if isinstance(topology, polybus.App):
        # App.start declares the whole topology; a run told to stop before it begins handles
        # nothing and closes what start opened (consumers and producers). The groups stay.
        consumers = await (topology.start(broker, topics=topics) if topics else topology.start(broker))
        stopped = asyncio.Event()
        stopped.set()
        await topology.run(broker, stop=stopped, consumers=consumers)
        return
    names = dict(topics or {})
    plan: dict[str, dict[str, None]] = {}  # physical topic -> its groups, in order, once each
    for topic, groups in topology.items():
        listed = [groups] if isinstance(groups, str) else groups
        plan.setdefault(names.get(topic, topic), {}).update(dict.fromkeys(listed))
    # every name is checked (building the consumers) before anything changes on the broker
    handles = {name: broker.topic(name) for name in plan}
    joins = [handles[name].consumer(group, prefetch=1) for name, groups in plan.items() for group in groups]
    # topics first (creating one topic from several joins at once is a race on some brokers),
    # then every group, concurrently: a join can take a second (a Kafka group's rebalance)
    await _all(handle.ensure() for handle in handles.values())
    await _all(_join(consumer) for consumer in joins)


async def _join(consumer: polybus.Consumer) -> None:
    async with consumer:
        pass  # joining creates the group


async def _all(operations: Iterable[Coroutine[Any, Any, None]]) -> None:
    """Run ``operations`` concurrently; wait for all of them, then raise the first error (if any)."""
    outcomes = await asyncio.gather(*operations, return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome


class RecipientListError(polybus.PublishError):
    """Some topics of a :class:`RecipientList` did not confirm a message; the others did.

    ``failed`` maps each topic that failed to its error, ``sent`` each one that confirmed to the
    message id, and ``message`` is what was sent (resend it to the failed topics with
    ``recipients.send(error.message, to=error.failed)``: it keeps its id, so consumers can tell
    a resend from a new message).
    """

    def __init__(
        self, message: polybus.Message, sent: dict[str, str], failed: dict[str, BaseException]
    ) -> None:
        reasons = "; ".join(f"{topic!r}: {type(exc).__name__}: {exc}" for topic, exc in failed.items())
        super().__init__(
            f"message {message.id} confirmed by {len(sent)} of {len(sent) + len(failed)} topics; "
            f"failed: {reasons}"
        )
        self.message = message
        self.sent = sent
        self.failed = failed


class RecipientList(AsyncContext):
    """Sends each message to every topic of a fixed list. Use as ``async with``.

    async with RecipientList(broker, ["billing", "shipping", "audit"]) as recipients:
        ids = await recipients.send(order)          # {"billing": id, "shipping": id, "audit": id}

    Entering opens one producer per topic (creating the topics). :meth:`send` sends to all of
    them concurrently and returns once every broker confirmed; the message has the same id on
    every topic. Closing closes the producers (waiting for sends under way).
    """

    def __init__(self, broker: polybus.Broker, topics: Iterable[str]) -> None:
        names = list(topics)
        if isinstance(topics, str):
            raise polybus.ConfigurationError(f"topics must be a list of names, not the str {topics!r}")
        if not names:
            raise polybus.ConfigurationError("a recipient list needs at least one topic")
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise polybus.ConfigurationError(f"topics listed more than once: {', '.join(twice)}")
        self.broker = broker
        self.topics: tuple[str, ...] = tuple(names)
        """The topics, in the order given."""
        self._producers = {name: broker.topic(name).producer() for name in names}  # checks the names
        self._opened = False
        self._closed = False

    def __repr__(self) -> str:
        closed = " closed" if self._closed else ""
        return f"<RecipientList {list(self.topics)} on {self.broker.scheme}{closed}>"

    @property
    def producers(self) -> Mapping[str, polybus.Producer]:
        """The producer of each topic (read-only), for sends to one of them alone."""
        return MappingProxyType(self._producers)

    async def open(self) -> None:
        """Open every producer, concurrently (creates the topics). Called by ``async with``."""
        if self._closed:
            raise polybus.ClosedError(f"{self!r} is closed; create a new one")
        if self._opened:
            return
        try:
            await _all(producer.open() for producer in self._producers.values())
        except BaseException:
            await self.aclose()
            raise
        self._opened = True

    async def aclose(self) -> None:
        """Close every producer (each waits for its sends under way). Idempotent."""
        self._closed = True
        for producer in self._producers.values():
            await producer.aclose()

    async def send(
        self,
        body: Any,
        *,
        key: str | None = None,
        headers: dict[str, str] | None = None,
        to: Collection[str] | None = None,
    ) -> dict[str, str]:
        """Send ``body`` to every topic (or to those in ``to``); return ``{topic: id}`` once all confirmed.

        ``body`` is anything ``Producer.send`` takes, or a :class:`polybus.Message` sent as it is
        (with its own id, key and headers). The sends run concurrently. If any topic fails,
        :class:`RecipientListError` names each failed topic with its error, after every send
        finished; the topics that confirmed keep the message (at-least-once, nothing is undone).
        """
        if isinstance(body, polybus.Message):
            if key is not None or headers is not None:
                raise polybus.EncodeError("a Message carries its own key and headers; pass neither")
            message = body
        else:
            message = polybus.Message.of(body, key=key, headers=headers)  # encode once, for all
        targets = self.topics if to is None else self._targets(to)
        await self.open()  # refuses a closed list; opens a list used without ``async with``
        outcomes = await asyncio.gather(
            *(self._send_one(topic, message) for topic in targets), return_exceptions=True
        )
        sent: dict[str, str] = {}
        failed: dict[str, BaseException] = {}
        for topic, outcome in zip(targets, outcomes, strict=True):
            if isinstance(outcome, str):
                sent[topic] = outcome
            elif isinstance(outcome, Exception):
                failed[topic] = outcome
            else:  # a cancellation or an exit: not a failure of one topic
                raise outcome
        if failed:
            raise RecipientListError(message, sent, failed) from next(iter(failed.values()))
        return sent

    def _targets(self, to: Collection[str]) -> tuple[str, ...]:
        if isinstance(to, str):
            raise polybus.ConfigurationError(f"to must be a collection of topics, not the str {to!r}")
        unknown = [topic for topic in to if topic not in self._producers]
        if unknown:
            raise polybus.ConfigurationError(f"not in this recipient list: {', '.join(map(repr, unknown))}")
        return tuple(topic for topic in self.topics if topic in to)

    async def _send_one(self, topic: str, message: polybus.Message) -> str:
        # each topic gets its own copy of the headers (an adapter may add its own), one id for all
        copy = dataclasses.replace(message, headers=dict(message.headers))
        ids = await self._producers[topic].send_many([copy])
        return ids[0]


async def send_to_all(
    broker: polybus.Broker,
    topics: Iterable[str],
    body: Any,
    *,
    key: str | None = None,
    headers: dict[str, str] | None = None,
) -> dict[str, str]:
    """Send one message to every topic in ``topics``: a :class:`RecipientList` opened for one send.

    For repeated sends keep a :class:`RecipientList` open instead (it opens its producers once).
    """
    async with RecipientList(broker, topics) as recipients:
        return await recipients.send(body, key=key, headers=headers)
