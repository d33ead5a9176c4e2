"""polybus adapter for Amazon SQS, with SNS fan-out: ``polybus.connect("sqs://...")``.

A polybus topic is an SNS topic; each group is an SQS queue subscribed to it with raw message
delivery. boto3 runs on bounded worker threads, never on the event loop. See docs/sqs.md.
"""

from polybus_sqs._broker import SqsBroker, SqsTopic
from polybus_sqs._consumer import SqsConsumer
from polybus_sqs._errors import TransientBrokerError
from polybus_sqs._producer import SqsProducer
from polybus_sqs._settings import SqsSettings

__all__ = ["SqsBroker", "SqsConsumer", "SqsProducer", "SqsSettings", "SqsTopic", "TransientBrokerError"]
