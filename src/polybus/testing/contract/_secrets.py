"""Secret cases: a password in the URL shows in no repr, error, cause or log record.

The password goes into the URL through ``ContractConfig.password_url`` (default: the userinfo);
where the broker accepts any password (a local emulator), ``wrong_password_refused`` is False and
the failed-connect case skips. Each run uses a fresh canary password, so a hit is never stale.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

import polybus
from polybus.testing._names import unique_name
from polybus.testing._urls import with_options
from polybus.testing.contract._config import ContractConfig

__all__ = ["SecretCases"]


def _canary_url(polybus_url: str, cfg: ContractConfig) -> tuple[str, str]:
    canary = unique_name("Canary").replace("-", "")
    url = cfg.password_url(polybus_url, canary)
    if url is None:
        pytest.skip("the broker URL cannot carry a password")
    return canary, url


def _assert_hidden(canary: str, error: BaseException, caplog: pytest.LogCaptureFixture) -> None:
    chain: BaseException | None = error
    while chain is not None:  # the error, and everything in its cause chain
        for text in (str(chain), repr(chain), *map(repr, chain.args)):
            assert canary not in text, f"{type(chain).__name__}: {text}"
        chain = chain.__cause__ or chain.__context__
    assert canary not in caplog.text  # every record formatted, tracebacks included
    for record in caplog.records:
        logged = f"{record.getMessage()} {record.exc_text or ''} {record.stack_info or ''}"
        assert canary not in logged, f"logged by {record.name}: {logged}"


class SecretCases:
    """Mixin of :class:`~polybus.testing.contract.BrokerContract`."""

    async def test_password_shows_in_no_repr_and_no_configuration_error(
        self, polybus_url: str, polybus_contract_config: ContractConfig, caplog: pytest.LogCaptureFixture
    ) -> None:
        canary, url = _canary_url(polybus_url, polybus_contract_config)
        caplog.set_level(logging.DEBUG)
        broker = polybus.connect(url)
        for text in (repr(broker), str(broker), broker.display_url):
            assert canary not in text, text
        with pytest.raises(polybus.ConfigurationError) as info:
            polybus.connect(with_options(url, no_such_option=1))
        assert "no_such_option" in str(info.value)
        _assert_hidden(canary, info.value, caplog)

    async def test_wrong_password_raises_connection_error_and_shows_it_nowhere(
        self, polybus_url: str, polybus_contract_config: ContractConfig, caplog: pytest.LogCaptureFixture
    ) -> None:
        cfg = polybus_contract_config
        if not cfg.wrong_password_refused:
            pytest.skip("the broker accepts any password (ContractConfig.wrong_password_refused is False)")
        canary, url = _canary_url(polybus_url, cfg)
        caplog.set_level(logging.DEBUG)
        broker = polybus.connect(url)
        with pytest.raises(polybus.BrokerConnectionError) as info:
            async with asyncio.timeout(3 * cfg.receive_timeout), broker:
                await broker.topic(unique_name("auth")).ensure()
        await broker.aclose()
        _assert_hidden(canary, info.value, caplog)
        assert canary not in repr(broker)
