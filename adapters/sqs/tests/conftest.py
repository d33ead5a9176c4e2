"""Fixtures of the sqs adapter's tests: a real SQS endpoint (moto's server here) from the harness."""

from __future__ import annotations

import pytest

from polybus.testing import with_options
from polybus.testing.contract import ContractConfig
from polybus.testing.plugin import broker_url


@pytest.fixture(scope="session")
def polybus_url() -> str:
    return broker_url("sqs")


@pytest.fixture
def polybus_contract_config() -> ContractConfig:
    """moto's server handles about 200 messages/s and slows as queues grow: the volume cases are
    scaled down. A two-second visibility timeout is the lease. moto accepts any secret key, so
    the wrong-password case has nothing to check here (real SQS would refuse it)."""
    return ContractConfig(
        scale=0.02, lease=2.0, lease_options={"visibility_timeout": 2}, wrong_password_refused=False
    )


class RawClients:
    """Plain boto3 clients for the same endpoint, for interop tests and fault injection checks."""

    def __init__(self, url: str) -> None:
        import boto3
        from polybus_sqs import SqsSettings

        s = SqsSettings.from_url(url)
        options = {
            "endpoint_url": s.endpoint_url,
            "region_name": s.region or "us-east-1",
            "aws_access_key_id": s.access_key_id,
            "aws_secret_access_key": s.secret,
        }
        self.sns = boto3.client("sns", **options)
        self.sqs = boto3.client("sqs", **options)


@pytest.fixture(scope="session")
def raw(polybus_url: str) -> RawClients:
    return RawClients(polybus_url)


@pytest.fixture
def url_with(polybus_url: str):  # type: ignore[no-untyped-def]
    """``url_with(visibility_timeout=2)``: the broker URL with extra options."""
    return lambda **options: with_options(polybus_url, **options)
