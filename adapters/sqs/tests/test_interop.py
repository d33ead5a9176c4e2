"""Interop with plain boto3: what polybus sends reads naturally, and what boto3 sends is consumed."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import polybus
from polybus.testing import unique_name

pytestmark = pytest.mark.polybus(timeout=60)


async def test_plain_boto3_reads_what_polybus_sends(polybus_url: str, raw: Any) -> None:
    async with polybus.connect(polybus_url) as broker:
        topic = broker.topic(unique_name("out"))
        await topic.ensure()
        queue = await asyncio.to_thread(raw.sqs.create_queue, QueueName=unique_name("raw"))
        arn = (
            await asyncio.to_thread(
                raw.sqs.get_queue_attributes, QueueUrl=queue["QueueUrl"], AttributeNames=["QueueArn"]
            )
        )["Attributes"]["QueueArn"]
        await asyncio.to_thread(
            raw.sns.subscribe,
            TopicArn=topic.arn,  # type: ignore[attr-defined]
            Protocol="sqs",
            Endpoint=arn,
            Attributes={"RawMessageDelivery": "true"},
        )
        async with topic.producer() as producer:
            sent_id = await producer.send({"order": 7}, key="cust-1", headers={"trace": "abc"})
        reply = await asyncio.to_thread(
            raw.sqs.receive_message,
            QueueUrl=queue["QueueUrl"],
            WaitTimeSeconds=5,
            MessageAttributeNames=["All"],
        )
    [message] = reply["Messages"]
    attributes = {k: v["StringValue"] for k, v in message["MessageAttributes"].items()}
    assert message["Body"] == '{"order":7}'
    assert attributes == {
        "content-type": "application/json",
        "trace": "abc",
        "polybus-id": sent_id,
        "polybus-key": "cust-1",
    }


async def test_polybus_consumes_what_plain_boto3_publishes(polybus_url: str, raw: Any) -> None:
    async with polybus.connect(polybus_url) as broker:
        topic = broker.topic(unique_name("in"))
        async with topic.consumer(unique_name("g")) as consumer:
            reply = await asyncio.to_thread(
                raw.sns.publish,
                TopicArn=topic.arn,  # type: ignore[attr-defined]
                Message="plain text from boto3",
                MessageAttributes={
                    "trace": {"DataType": "String", "StringValue": "xyz"},
                    "count": {"DataType": "Number", "StringValue": "5"},
                },
            )
            assert reply["MessageId"]
            d = await consumer.receive(timeout=5)
            assert d is not None
            await d.ack()
            # and straight into the group's queue, bypassing SNS
            await asyncio.to_thread(
                raw.sqs.send_message,
                QueueUrl=consumer.queue.url,  # type: ignore[attr-defined]
                MessageBody="direct",
                MessageAttributes={"trace": {"DataType": "String", "StringValue": "q"}},
            )
            direct = await consumer.receive(timeout=5)
            assert direct is not None
            await direct.ack()
    assert d.body == b"plain text from boto3"
    assert d.headers == {"trace": "xyz", "count": "5"}
    assert d.attempt == 1 and d.key is None and d.id and d.content_type is None
    assert direct.body == b"direct" and direct.headers == {"trace": "q"} and direct.attempt == 1
    assert direct.id != d.id
