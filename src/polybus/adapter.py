"""``polybus.adapter``: everything an adapter author needs, and the only core module adapters import.

An adapter is a small distribution that registers its URL schemes in the ``polybus.brokers``
entry-point group and subclasses the four base classes here. The bases own the hard invariants
(life cycle and closed state, size checks, buffering, the prefetch bound, settle-exactly-once,
ack coalescing, handing unsettled deliveries back on close, option validation); an adapter fills
in small hooks. docs/writing-an-adapter.md walks through a whole minimal adapter.

What is here:

- base classes and hooks: :class:`Broker` (``scheme``, ``capabilities``, ``display_url``,
  ``_open``, ``_aclose``, ``_topic``; a native reply path: ``_inbox``, ``_reply``),
  :class:`PushInbox` (a native inbox: ``_open`` subscribes to the broker's reply path and
  calls ``push()`` per reply; ``_aclose``; optional ``_request``), :class:`Inbox`,
  :class:`Topic` (``_ensure``, ``_delete``, ``_stats``, ``_producer``, ``_consumer``,
  ``consumer_options``, ``producer_options``), :class:`Producer`
  (``_publish``, optional ``_publish_bodies``), :class:`Consumer` (``_open``, ``_fetch``,
  ``_settle_native``, ``_release``, ``_interrupt``, optional ``_ack_batch``; for adapters:
  ``held()``, ``_take_acks()``, ``_flush_acks()``, ``_drop_buffered()``);
- what adapters build: :class:`Delivery`, :class:`Message`, :class:`GroupStats`,
  :class:`TopicStats`, :class:`Capabilities`; header names and content types; message ids;
- plumbing: :class:`AdapterSettings` (one settings model per adapter, ``from_url`` included),
  :class:`OptionsModel`, :class:`ReconnectPolicy` and :class:`Outage` (one backoff),
  :class:`DelayHeap`, URL and secret helpers (:func:`split_url`, :func:`redact_url`,
  :func:`describe_error`, :func:`tls_context`); :func:`register_scheme` for an adapter that is not
  installed as a distribution (yet);
- testing: the contract suite is ``polybus.testing.contract.BrokerContract``; the pytest plugin is
  ``polybus.testing.plugin``; ``polybus.testing.TcpRelay`` cuts connections for resilience tests.

The core never imports this module's users; this module imports core modules only.
"""

from polybus._adapter_settings import AdapterSettings, MiB, NoOptions, OptionsModel, TlsSettings
from polybus._broker import Broker
from polybus._capabilities import Capabilities, Support
from polybus._consumer import Consumer
from polybus._delay import DelayHeap
from polybus._delivery import Delivery, Outcome
from polybus._message import (
    BYTES,
    BYTES_HEADER_SIZE,
    CONTENT_TYPE,
    ID_HEADER,
    JSON,
    TEXT,
    Message,
    decode_body,
    encode_body,
    new_message_id,
)
from polybus._producer import Producer
from polybus._reconnect import Outage, ReconnectPolicy
from polybus._registry import register_scheme
from polybus._reply import INBOX_PREFIX, REPLY_TO_HEADER, Inbox, PushInbox
from polybus._settings import describe_error, redact_url, split_url, tls_context, url_options
from polybus._topic import GroupStats, Start, Topic, TopicStats, check_name

__all__ = [
    "BYTES",
    "BYTES_HEADER_SIZE",
    "CONTENT_TYPE",
    "ID_HEADER",
    "INBOX_PREFIX",
    "JSON",
    "REPLY_TO_HEADER",
    "TEXT",
    "AdapterSettings",
    "Broker",
    "Capabilities",
    "Consumer",
    "DelayHeap",
    "Delivery",
    "GroupStats",
    "Inbox",
    "Message",
    "MiB",
    "NoOptions",
    "OptionsModel",
    "Outage",
    "Outcome",
    "Producer",
    "PushInbox",
    "ReconnectPolicy",
    "Start",
    "Support",
    "TlsSettings",
    "Topic",
    "TopicStats",
    "check_name",
    "decode_body",
    "describe_error",
    "encode_body",
    "new_message_id",
    "redact_url",
    "register_scheme",
    "split_url",
    "tls_context",
    "url_options",
]
