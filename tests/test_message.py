"""Encoding and decoding of bodies: bytes, str, JSON values and pydantic models; never pickle."""

import datetime

import pydantic
import pytest

import polybus
from polybus._message import decode_body, encode_body


class Point(pydantic.BaseModel):
    x: int
    y: int


@pytest.mark.parametrize(
    ("value", "body", "content_type"),
    [
        (b"\x00\xff", b"\x00\xff", "application/octet-stream"),
        (bytearray(b"ab"), b"ab", "application/octet-stream"),
        ("héllo", "héllo".encode(), "text/plain; charset=utf-8"),
        ({"a": 1}, b'{"a":1}', "application/json"),
        ([1, "two", None], b'[1,"two",null]', "application/json"),
        (Point(x=1, y=2), b'{"x":1,"y":2}', "application/json"),
    ],
)
def test_encode(value: object, body: bytes, content_type: str) -> None:
    assert encode_body(value) == (body, content_type)


def test_unencodable_values_raise_encode_error_which_is_a_type_error() -> None:
    for value in (object(), {1, 2}, datetime.datetime.now()):
        with pytest.raises(polybus.EncodeError, match="never pickles"):
            encode_body(value)
    assert issubclass(polybus.EncodeError, TypeError)


def test_message_of_sets_content_type_and_checks_headers_and_key() -> None:
    m = polybus.Message.of({"a": 1}, key="k", headers={"h": "v"})
    assert m.headers == {"content-type": "application/json", "h": "v"}
    assert m.key == "k"
    assert len(m.id) == 32
    assert m.size == len(m.body) + len("content-type") + len("application/json") + 2
    with pytest.raises(polybus.EncodeError):
        polybus.Message.of(b"x", headers={"h": 1})  # type: ignore[dict-item]
    with pytest.raises(polybus.EncodeError):
        polybus.Message.of(b"x", key=7)  # type: ignore[arg-type]
    assert polybus.Message.of(m) is m


def test_decode_into_models_and_types() -> None:
    assert decode_body(b'{"x":1,"y":2}', Point) == Point(x=1, y=2)
    assert decode_body(b"[1,2]", list[int]) == [1, 2]
    assert decode_body(b"hi", str) == "hi"
    assert decode_body(b"raw", bytes) == b"raw"
    assert decode_body(b'{"a":1}') == {"a": 1}


@pytest.mark.parametrize(
    ("body", "model"),
    [
        (b"{oops", None),
        (b'{"x":"no"}', Point),
        (b"\xff", str),
        (b"[" * 100_000, None),
        (b"[" * 100_000, Point),
    ],
)
def test_bad_payloads_raise_decode_error(body: bytes, model: object) -> None:
    with pytest.raises(polybus.DecodeError, match="does not decode"):
        decode_body(body, model)
