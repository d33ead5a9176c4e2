"""Typed handlers: what an App handler's signature asks for, worked out once at ``subscribe`` time.

The first parameter's annotation says how the body is decoded (``polybus.Delivery``: not at all;
``bytes``; ``str``; ``dict``; a pydantic model; any type pydantic validates); a parameter annotated
``polybus.Delivery`` receives the delivery. A single unannotated parameter is the plain handler
``async (delivery) -> None``. :func:`typed_handler` turns the function into a plain
:data:`~polybus.Handler` whose hot path is a precomputed decode, the call, and (for a result
that is not ``None``) :class:`Returns`, which publishes it. Imports core modules only.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import typing
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import pydantic

from polybus._delivery import Delivery
from polybus._errors import ConfigurationError, DecodeError
from polybus._message import DECODE_FAILURES, Message
from polybus._reply import CAUSATION_HEADER, CORRELATION_HEADER, REPLY_TO_HEADER

if TYPE_CHECKING:
    from polybus._broker import Broker
    from polybus._producer import Producer

__all__ = ["HandlerShape", "Returns", "inspect_handler", "typed_handler"]

log = logging.getLogger("polybus")

Decoder = Callable[[bytes], Any]
_NO_DECODE = object()  # the first parameter is the delivery itself


def _decode_json(body: bytes) -> Any:
    return json.loads(body)


def _decode_text(body: bytes) -> str:
    return body.decode()


def _decode_bytes(body: bytes) -> bytes:
    return body


def _decoder(annotation: Any) -> Decoder:
    """The function that turns a body into a value of ``annotation`` (raising on a bad body)."""
    if annotation is bytes:
        return _decode_bytes
    if annotation is str:
        return _decode_text
    if annotation is Any:
        return _decode_json
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        return annotation.model_validate_json
    try:
        adapter: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(annotation)
    except pydantic.PydanticSchemaGenerationError as exc:
        raise ConfigurationError(f"pydantic cannot validate a body into {annotation!r}: {exc}") from exc
    return adapter.validate_json


def _describe(exc: Exception) -> str:
    """A decode error's reason, without echoing the body (it may hold anything)."""
    if isinstance(exc, pydantic.ValidationError):
        parts = []
        for error in exc.errors(include_url=False, include_input=False)[:5]:
            where = ".".join(str(p) for p in error.get("loc", ())) or "body"
            parts.append(f"{where}: {error.get('msg')}")
        more = f" (+{exc.error_count() - 5} more)" if exc.error_count() > 5 else ""
        return "; ".join(parts) + more
    return str(exc)


class HandlerShape(typing.NamedTuple):
    """What a handler's signature asks for."""

    decode: Any
    """``_NO_DECODE`` (the delivery is the first argument) or the body's decoder."""
    target: str
    """What the body is decoded into, for messages (``"Order"``, ``"bytes"``...)."""
    slots: tuple[str, ...]
    """Per positional parameter: ``"body"`` or ``"delivery"``."""
    keyword_delivery: tuple[str, ...]
    """Keyword-only parameters that receive the delivery."""
    returns_none: bool
    """The return annotation says the handler never returns a value."""


def inspect_handler(fn: Callable[..., Any], name: str) -> HandlerShape:
    """Work out how to call ``fn``; raise :class:`~polybus.ConfigurationError` if it cannot be called."""
    if inspect.isfunction(fn) and not inspect.iscoroutinefunction(fn):
        raise ConfigurationError(f"handler {name!r} must be an async function (async def)")
    try:
        signature = inspect.signature(fn, eval_str=True)  # also resolves string annotations
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"cannot read the signature of handler {name!r}: {exc}") from exc
    except Exception as exc:  # a forward reference that does not resolve (a class defined in a function)
        raise ConfigurationError(
            f"cannot resolve the annotations of handler {name!r}: {exc!r}; define the types it names at "
            "module level"
        ) from exc
    hints = {p.name: p.annotation for p in signature.parameters.values() if p.annotation is not p.empty}
    if signature.return_annotation is not signature.empty:
        hints["return"] = signature.return_annotation
    params = list(signature.parameters.values())
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if not positional:
        raise ConfigurationError(f"handler {name!r} must take the message as its first parameter")
    returns = hints.get("return", inspect.Parameter.empty)
    returns_none = returns is type(None) or returns is None
    first = positional[0]
    if first.name not in hints:
        if len(positional) == 1 and not any(p.name in hints for p in params if p.kind == p.KEYWORD_ONLY):
            return HandlerShape(_NO_DECODE, "Delivery", ("delivery",), (), returns_none)  # plain handler
        raise ConfigurationError(
            f"handler {name!r}: annotate its first parameter {first.name!r} with the body's type "
            "(polybus.Delivery, bytes, str, dict, a pydantic model...)"
        )
    slots: list[str] = []
    for index, param in enumerate(positional):
        annotation = hints.get(param.name)
        if annotation is Delivery:
            slots.append("delivery")
        elif index == 0:
            slots.append("body")
        elif param.default is param.empty:
            raise ConfigurationError(
                f"handler {name!r}: parameter {param.name!r} must be annotated polybus.Delivery "
                "(only the first parameter receives the body) or have a default"
            )
        else:
            break  # the rest keep their defaults
    keyword_delivery = tuple(
        p.name for p in params if p.kind == p.KEYWORD_ONLY and hints.get(p.name) is Delivery
    )
    for param in params:
        if (
            param.kind == param.KEYWORD_ONLY
            and param.name not in keyword_delivery
            and param.default is param.empty
        ):
            raise ConfigurationError(
                f"handler {name!r}: keyword-only parameter {param.name!r} needs a default"
            )
    annotation = hints[first.name]
    if annotation is Delivery:
        return HandlerShape(_NO_DECODE, "Delivery", tuple(slots), keyword_delivery, returns_none)
    target = getattr(annotation, "__name__", None) or repr(annotation)
    return HandlerShape(_decoder(annotation), target, tuple(slots), keyword_delivery, returns_none)


def derived_id(source: str, subscription: str, index: int) -> str:
    """The id of the ``index``-th message a handler returned for message ``source``: the same on every
    redelivery, so a broker's dedup or an idempotent consumer downstream drops the re-published copy."""
    return hashlib.blake2b(f"{subscription}\0{source}\0{index}".encode(), digest_size=16).hexdigest()


class Returns:
    """Publishes what one subscription's handler returns: to the request's reply address when the
    delivery carries one, else to ``publish_to``; keeping the key, with the causation header."""

    def __init__(self, subscription: str, publish_to: str | None) -> None:
        self.subscription = subscription
        self.publish_to = publish_to
        self.broker: Broker | None = None
        self.producer: Producer | None = None
        self.warned = False

    def bind(self, broker: Broker, producer: Producer | None) -> None:
        """Send through ``broker`` (replies) and ``producer`` (the ``publish_to`` topic, opened)."""
        self.broker = broker
        self.producer = producer

    def messages(self, delivery: Delivery, result: Any) -> list[Message]:
        """The messages a handler's ``result`` stands for, keyed and with the causation header."""
        if result.__class__ is list and result and all(isinstance(m, Message) for m in result):
            items: list[Message] = result
        elif isinstance(result, Message):
            items = [result]
        else:
            message = Message.of(result)
            message.id = derived_id(delivery.id, self.subscription, 0)
            items = [message]
        for message in items:
            if message.key is None:
                message.key = delivery.key
            message.headers[CAUSATION_HEADER] = delivery.id
        return items

    async def __call__(self, delivery: Delivery, result: Any) -> None:
        headers = delivery.headers
        address = headers.get(REPLY_TO_HEADER)
        if address is not None:
            broker = self.broker if self.broker is not None else delivery._consumer.topic.broker
            correlation = headers.get(CORRELATION_HEADER)
            for message in self.messages(delivery, result):
                if correlation is not None:
                    message.headers[CORRELATION_HEADER] = correlation
                await broker.reply(address, message)
            return
        if self.producer is not None:
            await self.producer.send_many(self.messages(delivery, result))
            return
        if not self.warned:
            self.warned = True
            log.warning(
                "subscription %r: its handler returned a %s for %r, which is neither a request nor has "
                "publish_to: the value is dropped (logged once per subscription)",
                self.subscription,
                type(result).__name__,
                delivery,
            )


def typed_handler(
    fn: Callable[..., Awaitable[Any]], shape: HandlerShape, returns: Returns
) -> Callable[[Delivery], Awaitable[None]]:
    """A plain handler that decodes the body as ``shape`` says, calls ``fn`` and publishes its result.

    A body that does not decode raises :class:`~polybus.DecodeError` (the runner rejects it);
    ``fn`` never sees it.
    """
    decode, target, slots = shape.decode, shape.target, shape.slots
    keywords = shape.keyword_delivery

    def failed(delivery: Delivery, exc: Exception) -> DecodeError:
        return DecodeError(
            f"body of {len(delivery.body)} bytes does not decode as {target}: {_describe(exc)}"
        )

    if decode is _NO_DECODE and slots == ("delivery",) and not keywords:
        if shape.returns_none:
            return fn  # already a plain handler: nothing to decode, nothing to publish

        async def plain(delivery: Delivery) -> None:
            result = await fn(delivery)
            if result is not None:
                await returns(delivery, result)

        return plain

    if slots == ("body",) and not keywords:

        async def body_only(delivery: Delivery) -> None:
            try:
                value = decode(delivery.body)
            except DECODE_FAILURES as exc:
                raise failed(delivery, exc) from exc
            result = await fn(value)
            if result is not None:
                await returns(delivery, result)

        return body_only

    if slots == ("body", "delivery") and not keywords:

        async def body_and_delivery(delivery: Delivery) -> None:
            try:
                value = decode(delivery.body)
            except DECODE_FAILURES as exc:
                raise failed(delivery, exc) from exc
            result = await fn(value, delivery)
            if result is not None:
                await returns(delivery, result)

        return body_and_delivery

    async def general(delivery: Delivery) -> None:
        value: Any = delivery
        if decode is not _NO_DECODE:
            try:
                value = decode(delivery.body)
            except DECODE_FAILURES as exc:
                raise failed(delivery, exc) from exc
        args = [value if slot == "body" else delivery for slot in slots]
        result = await fn(*args, **dict.fromkeys(keywords, delivery))
        if result is not None:
            await returns(delivery, result)

    return general
