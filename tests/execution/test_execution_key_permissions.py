"""Live mode reads the API key's permissions at start (GET /sapi/v1/account/apiRestrictions, served by
the fake exchange) and refuses a key that can withdraw or transfer, or has no IP restriction, unless
the operator accepts it explicitly; it fails closed when it cannot read them. Testnet is not checked."""

from __future__ import annotations

import socket

import pytest
from structlog.testing import capture_logs

from execution.config import ExchangeVenue, ExecutorConfig
from execution.safety import (
    KEY_OVERRIDE_ENV,
    KEY_OVERRIDE_VALUE,
    BrokerUnavailable,
    LiveTradingRefused,
    build_broker,
    key_problems,
)
from fake_exchange.orders import TEST_API_KEY, TEST_API_SECRET
from tapeflow_runtime.settings import Settings
from tests.support.fake_exchange import FakeOnThread

pytestmark = pytest.mark.integration

CLEAN = {
    "ipRestrict": True,
    "enableFutures": True,
    "enableReading": True,
    "enableWithdrawals": False,
    "enableInternalTransfer": False,
    "permitsUniversalTransfer": False,
}


@pytest.fixture(scope="module")
def fake():
    venue = FakeOnThread()
    yield venue
    venue.stop()


def settings(tmp_path, spot_url: str) -> Settings:
    return Settings(
        home=tmp_path,
        broker="127.0.0.1:1",
        binance_api_key=TEST_API_KEY,
        binance_api_secret=TEST_API_SECRET,
        binance_spot_rest_url=spot_url,
    )


def config(fake) -> ExecutorConfig:
    return ExecutorConfig(
        exchange=ExchangeVenue(rest_url=fake.rest_url, ws_url=fake.ws_url, request_timeout_s=2, connect_timeout_s=2)
    )


def restrict(fake, **fields) -> None:
    fake.control("config", {"api_restrictions": {**CLEAN, **fields}})


def test_key_problems_from_an_answer():
    assert key_problems(CLEAN) == []
    assert key_problems({**CLEAN, "enableWithdrawals": True, "ipRestrict": False}) == [
        "can withdraw",
        "has no IP restriction",
    ]
    # a field missing from the answer is not taken as safe
    assert key_problems({"ipRestrict": True, "enableFutures": True}) == [
        "can withdraw",
        "can transfer between accounts",
        "can make universal transfers",
    ]


def test_a_restricted_key_trades_live(fake, tmp_path):
    restrict(fake)
    broker = build_broker("live", config(fake), settings(tmp_path, fake.rest_url), environ={})
    try:
        assert broker.mode == "live" and broker.accepted_key_problems == []
    finally:
        broker.close()


@pytest.mark.parametrize(
    "fields,words",
    [
        ({"enableWithdrawals": True}, "can withdraw"),
        ({"enableInternalTransfer": True}, "can transfer between accounts"),
        ({"permitsUniversalTransfer": True}, "can make universal transfers"),
        ({"ipRestrict": False}, "has no IP restriction"),
    ],
)
def test_a_risky_key_is_refused_unless_accepted(fake, tmp_path, fields, words):
    restrict(fake, **fields)
    with pytest.raises(LiveTradingRefused) as refused:
        build_broker("live", config(fake), settings(tmp_path, fake.rest_url), environ={KEY_OVERRIDE_ENV: "yes"})
    assert words in str(refused.value) and KEY_OVERRIDE_ENV in str(refused.value)
    assert TEST_API_KEY not in str(refused.value) and TEST_API_SECRET not in str(refused.value)
    broker = build_broker(
        "live", config(fake), settings(tmp_path, fake.rest_url), environ={KEY_OVERRIDE_ENV: KEY_OVERRIDE_VALUE}
    )
    try:
        assert broker.accepted_key_problems == [words]
    finally:
        broker.close()


def test_a_key_that_cannot_trade_futures_is_refused_even_when_accepted(fake, tmp_path):
    restrict(fake, enableFutures=False)
    with pytest.raises(LiveTradingRefused, match="cannot trade futures"):
        build_broker(
            "live", config(fake), settings(tmp_path, fake.rest_url), environ={KEY_OVERRIDE_ENV: KEY_OVERRIDE_VALUE}
        )


def test_permissions_that_cannot_be_read_refuse_live_mode(fake, tmp_path):
    restrict(fake)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(LiveTradingRefused, match="cannot read the key's permissions"):
        build_broker("live", config(fake), settings(tmp_path, f"http://127.0.0.1:{port}"), environ={})
    # a key the spot API does not know (another venue's): refused, not trusted
    wrong = Settings(
        home=tmp_path,
        broker="127.0.0.1:1",
        binance_api_key="other-key",
        binance_api_secret="other",
        binance_spot_rest_url=fake.rest_url,
    )
    with pytest.raises((BrokerUnavailable, LiveTradingRefused)) as refused:
        build_broker("live", config(fake), wrong, environ={})
    assert "other-key" not in str(refused.value)


def test_testnet_is_not_checked(fake, tmp_path):
    restrict(fake, enableWithdrawals=True, ipRestrict=False)
    broker = build_broker("testnet", config(fake), settings(tmp_path, "http://127.0.0.1:1"), environ={})
    try:
        assert broker.mode == "testnet" and broker.accepted_key_problems == []
    finally:
        broker.close()
    restrict(fake)


async def test_the_executor_refuses_a_risky_key_at_start(fake, tmp_path):
    """Through `tapeflow execute --mode live`: the refusal is the one-line reason of the refused start."""
    from execution.safety import LIVE_OPT_IN_ENV, LIVE_OPT_IN_VALUE
    from execution.service import ExecuteOptions, run_executor

    restrict(fake, enableWithdrawals=True)
    path = tmp_path / "executor.yaml"
    path.write_text(f"exchange:\n  rest_url: {fake.rest_url}\n  ws_url: {fake.ws_url}\n  request_timeout_s: 2\n")
    with capture_logs() as logs:
        code = await run_executor(
            settings(tmp_path, fake.rest_url),
            "live",
            ExecuteOptions(config_path=path),
            environ={LIVE_OPT_IN_ENV: LIVE_OPT_IN_VALUE},
        )
    assert code == 2
    [refusal] = [e for e in logs if e["event"] == "executor refused to start"]
    assert "can withdraw" in refusal["reason"]
    restrict(fake)
