"""Names and plumbing on AWS: the SNS topic of a polybus topic, the SQS queue of a group, their links.

A polybus topic ``orders`` is the SNS topic ``{prefix}orders`` (``.fifo`` appended in FIFO mode).
A group is an SQS queue ``{prefix}{topic}-{group}-{hash8}`` (parts shortened to SQS's 80-character
limit; the hash of topic and group keeps names distinct), tagged ``polybus:topic`` and
``polybus:group``, with a policy that lets the topic send to it, subscribed to the topic with raw
message delivery. A group-less consumer gets ``{prefix}{topic}-tmp-{random}``, removed on close.
Imports only the adapter's settings and errors, and polybus.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import uuid
from typing import TYPE_CHECKING, Any

from polybus import GroupStats, NotFoundError
from polybus_sqs._errors import error_code

if TYPE_CHECKING:
    from polybus_sqs._broker import SqsBroker

__all__ = [
    "Queue",
    "delete_topic",
    "ensure_queue",
    "group_queue_url",
    "remove_queue",
    "sns_topic_name",
    "topic_stats",
]

TOPIC_TAG = "polybus:topic"
GROUP_TAG = "polybus:group"
DLQ_TAG = "polybus:dlq"
TEMPORARY_TAG = "polybus:temporary"
_QUEUE_NAME_MAX = 80


@dataclasses.dataclass(frozen=True)
class Queue:
    """An SQS queue as the adapter uses it."""

    name: str
    url: str
    arn: str
    subscription_arn: str | None = None
    dlq_url: str | None = None


def sns_topic_name(broker: SqsBroker, topic: str) -> str:
    s = broker.settings
    return f"{s.prefix}{topic}{'.fifo' if s.fifo else ''}"


def _queue_name(broker: SqsBroker, topic: str, group: str | None, extra: str = "") -> str:
    s = broker.settings
    suffix = ".fifo" if s.fifo else ""
    if group is None:
        tail = f"-tmp-{uuid.uuid4().hex[:12]}"
        budget = _QUEUE_NAME_MAX - len(s.prefix) - len(tail) - len(extra) - len(suffix)
        return f"{s.prefix}{topic[:budget]}{tail}{extra}{suffix}"
    digest = hashlib.sha256(f"{topic}\0{group}".encode()).hexdigest()[:8]
    budget = _QUEUE_NAME_MAX - len(s.prefix) - len(digest) - 2 - len(extra) - len(suffix)
    t = topic[: max(budget - len(group), budget // 2)]
    g = group[: budget - len(t)]
    return f"{s.prefix}{t}-{g}-{digest}{extra}{suffix}"


def _policy(queue_arn: str, topic_arn: str) -> str:
    statement = {
        "Sid": "polybus-sns",
        "Effect": "Allow",
        "Principal": {"Service": "sns.amazonaws.com"},
        "Action": "sqs:SendMessage",
        "Resource": queue_arn,
        "Condition": {"ArnEquals": {"aws:SourceArn": topic_arn}},
    }
    return json.dumps({"Version": "2012-10-17", "Statement": [statement]})


async def _create_queue(
    broker: SqsBroker, name: str, attributes: dict[str, str], tags: dict[str, str]
) -> str:
    if broker.settings.fifo:
        attributes = {**attributes, "FifoQueue": "true"}
    try:
        reply = await broker.call("sqs", "create_queue", QueueName=name, Attributes=attributes, tags=tags)
    except Exception as exc:
        if error_code(exc.__cause__ or exc) not in ("QueueAlreadyExists", "QueueNameExists"):
            raise
        # created earlier with other settings (another visibility timeout...): use it as it is
        reply = await broker.call("sqs", "get_queue_url", QueueName=name)
    return str(reply["QueueUrl"])


async def ensure_queue(broker: SqsBroker, topic: str, topic_arn: str, group: str | None) -> Queue:
    """Create (if missing) the queue of ``group`` on ``topic`` and subscribe it; return it."""
    s = broker.settings
    name = _queue_name(broker, topic, group)
    arn = broker.arn("sqs", name)
    attributes = {"VisibilityTimeout": str(s.visibility_timeout), "Policy": _policy(arn, topic_arn)}
    if s.retention is not None:
        attributes["MessageRetentionPeriod"] = str(s.retention)
    tags = {TOPIC_TAG: topic, GROUP_TAG: group or "-"}
    if group is None:
        tags[TEMPORARY_TAG] = "true"
    dlq_url = None
    if s.dead_letter_after is not None and group is not None:
        dlq_name = _queue_name(broker, topic, group, extra="-dlq")
        dlq_url = await _create_queue(broker, dlq_name, {}, {TOPIC_TAG: topic, GROUP_TAG: f"{group}:dlq"})
        attributes["RedrivePolicy"] = json.dumps(
            {"deadLetterTargetArn": broker.arn("sqs", dlq_name), "maxReceiveCount": s.dead_letter_after}
        )
        tags[DLQ_TAG] = dlq_name
    url = await _create_queue(broker, name, attributes, tags)
    reply = await broker.call(
        "sns",
        "subscribe",
        TopicArn=topic_arn,
        Protocol="sqs",
        Endpoint=arn,
        Attributes={"RawMessageDelivery": "true"},
        ReturnSubscriptionArn=True,
    )
    return Queue(name, url, arn, str(reply.get("SubscriptionArn") or "") or None, dlq_url)


async def group_queue_url(broker: SqsBroker, topic: str, group: str) -> str:
    """The URL of ``group``'s queue on ``topic``; :class:`~polybus.NotFoundError` if it does not exist."""
    known = broker._queues.get((topic, group))
    if known is not None:
        return known.url
    name = _queue_name(broker, topic, group)
    try:
        reply = await broker.call("sqs", "get_queue_url", QueueName=name)
    except NotFoundError:
        raise NotFoundError(f"group {group!r} of topic {topic!r} does not exist") from None
    return str(reply["QueueUrl"])


async def remove_queue(broker: SqsBroker, queue: Queue) -> None:
    """Unsubscribe and delete ``queue`` (a group-less consumer's temporary queue)."""
    if queue.subscription_arn:
        await broker.call("sns", "unsubscribe", SubscriptionArn=queue.subscription_arn)
    try:
        await broker.call("sqs", "delete_queue", QueueUrl=queue.url)
    except NotFoundError:
        pass


async def _group_queues(
    broker: SqsBroker, topic: str, topic_arn: str
) -> list[tuple[dict[str, Any], str, dict[str, str]]]:
    """``(subscription, queue url, queue tags)`` of the queues subscribed to the topic."""
    subscriptions: list[dict[str, Any]] = []
    token: str | None = None
    while True:
        params: dict[str, Any] = {"TopicArn": topic_arn}
        if token:
            params["NextToken"] = token
        reply = await broker.call("sns", "list_subscriptions_by_topic", **params)
        subscriptions.extend(reply.get("Subscriptions", []))
        token = reply.get("NextToken")
        if not token:
            break
    found = []
    for sub in subscriptions:
        if sub.get("Protocol") != "sqs":
            continue
        parts = str(sub.get("Endpoint", "")).split(":")
        try:
            url = (
                await broker.call(
                    "sqs", "get_queue_url", QueueName=parts[-1], QueueOwnerAWSAccountId=parts[4]
                )
            )["QueueUrl"]
            tags = (await broker.call("sqs", "list_queue_tags", QueueUrl=url)).get("Tags", {})
        except NotFoundError:
            continue
        found.append((sub, url, tags))
    return found


async def topic_stats(broker: SqsBroker, topic: str, topic_arn: str) -> dict[str, GroupStats]:
    """Backlog and in-flight counts of every polybus group of the topic."""
    await broker.call("sns", "get_topic_attributes", TopicArn=topic_arn)  # NotFoundError if missing
    groups: dict[str, GroupStats] = {}
    for _, url, tags in await _group_queues(broker, topic, topic_arn):
        if tags.get(TOPIC_TAG) != topic or TEMPORARY_TAG in tags:
            continue
        names = [
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesDelayed",
            "ApproximateNumberOfMessagesNotVisible",
        ]
        try:
            attrs = (await broker.call("sqs", "get_queue_attributes", QueueUrl=url, AttributeNames=names))[
                "Attributes"
            ]
        except NotFoundError:
            continue
        backlog = int(attrs.get(names[0], 0)) + int(attrs.get(names[1], 0))
        groups[tags[GROUP_TAG]] = GroupStats(backlog=backlog, in_flight=int(attrs.get(names[2], 0)))
    return groups


async def delete_topic(broker: SqsBroker, topic: str, topic_arn: str) -> None:
    """Delete the topic, the polybus group queues subscribed to it (and their dead-letter queues)."""
    await broker.call("sns", "get_topic_attributes", TopicArn=topic_arn)  # NotFoundError if missing
    for sub, url, tags in await _group_queues(broker, topic, topic_arn):
        if tags.get(TOPIC_TAG) == topic:
            try:
                await broker.call("sqs", "delete_queue", QueueUrl=url)
                if DLQ_TAG in tags:
                    dlq = await broker.call("sqs", "get_queue_url", QueueName=tags[DLQ_TAG])
                    await broker.call("sqs", "delete_queue", QueueUrl=dlq["QueueUrl"])
            except NotFoundError:
                pass
        try:
            await broker.call("sns", "unsubscribe", SubscriptionArn=sub["SubscriptionArn"])
        except NotFoundError:
            pass
    await broker.call("sns", "delete_topic", TopicArn=topic_arn)
