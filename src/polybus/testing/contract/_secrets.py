"""Secret cases: a connect refused for a wrong password shows that password nowhere.

The password goes into the URL through ``ContractConfig.password_url`` (default: the userinfo);
a broker that checks no password (a local emulator) sets it to ``None`` and the case skips.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

import polybus
from polybus.testing._names import unique_name
from polybus.testing.contract._config import ContractConfig

__all__ = ["SecretCases"]


class SecretCases:
    """Mixin of :class:`~polybus.testing.contract.BrokerContract`."""

    async def test_wrong_password_raises_connection_error_and_shows_it_nowhere(
        self,
        polybus_url: str,
        polybus_contract_config: ContractConfig,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        cfg = polybus_contract_config
        if cfg.password_url is None:
            pytest.skip("the broker checks no password (ContractConfig.password_url is None)")
        canary = unique_name("Canary").replace("-", "")
        url = cfg.password_url(polybus_url, canary)
        if url is None:
            pytest.skip("the broker URL cannot carry a password")
        caplog.set_level(logging.DEBUG)
        broker = polybus.connect(url)
        for text in (repr(broker), str(broker), broker.display_url):
            assert canary not in text, text
        with pytest.raises(polybus.BrokerConnectionError) as info:
            async with asyncio.timeout(3 * cfg.receive_timeout), broker:
                await broker.topic(unique_name("auth")).ensure()
        await broker.aclose()
        chain: BaseException | None = info.value
        while chain is not None:  # nor anywhere in the cause chain
            for text in (str(chain), repr(chain), *map(repr, chain.args)):
                assert canary not in text, f"{type(chain).__name__}: {text}"
            chain = chain.__cause__ or chain.__context__
        assert canary not in caplog.text  # formats every record, with its traceback
        for record in caplog.records:
            logged = f"{record.getMessage()} {record.exc_text or ''} {record.stack_info or ''}"
            assert canary not in logged, f"logged by {record.name}: {logged}"
        assert canary not in repr(broker)
