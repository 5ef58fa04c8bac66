"""Live and testnet refuse to start without the opt-in and keys; secrets never reach a log line.

Every run here points the exchange endpoints at a closed loopback port (`loopback_config`): a mode that
passes the checks then fails to connect, and nothing ever leaves the machine.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import structlog
from structlog.testing import capture_logs

from execution.config import ExchangeVenue, ExecutorConfig, load_executor_config
from execution.safety import (
    LIVE_OPT_IN_ENV,
    BrokerUnavailable,
    LiveTradingRefused,
    build_broker,
    check_mode_allowed,
    startup_echo,
)
from execution.service import ExecuteOptions, run_executor
from tapeflow_runtime.settings import Settings

KEY = "kEy-4f9c2b7d1e8a6f30-secret-value"
SECRET = "sEcReT-9a8b7c6d5e4f3a2b1c0d-value"
OPT_IN = {LIVE_OPT_IN_ENV: "I_UNDERSTAND"}


def settings(tmp_path, **kw) -> Settings:
    return Settings(home=tmp_path, broker="127.0.0.1:1", **kw)


def loopback_config(directory: Path) -> Path:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again when this block ends: connections are refused
    path = directory / "executor.yaml"
    path.write_text(
        f"exchange:\n  rest_url: http://127.0.0.1:{port}\n  ws_url: ws://127.0.0.1:{port}\n"
        "  request_timeout_s: 1\n  connect_timeout_s: 1\n"
    )
    return path


async def run(s: Settings, mode: str, environ: dict) -> tuple[int, list[dict]]:
    with capture_logs() as logs:
        code = await run_executor(s, mode, ExecuteOptions(config_path=loopback_config(s.home)), environ=environ)
    return code, logs


@pytest.mark.parametrize("mode", ["live", "testnet"])
async def test_refuses_without_the_opt_in(tmp_path, mode):
    code, logs = await run(settings(tmp_path, binance_api_key=KEY, binance_api_secret=SECRET), mode, {})
    assert code == 2
    [refusal] = [e for e in logs if e["event"] == "executor refused to start"]
    assert LIVE_OPT_IN_ENV in refusal["reason"] and "I_UNDERSTAND" in refusal["reason"]
    code, _ = await run(
        settings(tmp_path, binance_api_key=KEY, binance_api_secret=SECRET), mode, {LIVE_OPT_IN_ENV: "yes"}
    )
    assert code == 2  # only the exact phrase counts


@pytest.mark.parametrize("missing", ["binance_api_key", "binance_api_secret", "both"])
async def test_refuses_without_keys(tmp_path, missing):
    keys = {"binance_api_key": KEY, "binance_api_secret": SECRET}
    for name in keys if missing == "both" else [missing]:
        keys[name] = None
    code, logs = await run(settings(tmp_path, **keys), "live", OPT_IN)
    assert code == 2
    [refusal] = [e for e in logs if e["event"] == "executor refused to start"]
    assert "needs exchange keys" in refusal["reason"]
    if missing != "binance_api_secret":
        assert "TAPEFLOW_BINANCE_API_KEY" in refusal["reason"]


async def test_with_opt_in_and_keys_it_connects_to_the_exchange_and_never_logs_keys(tmp_path, capfd, monkeypatch):
    monkeypatch.setenv("TAPEFLOW_BINANCE_API_KEY", KEY)
    monkeypatch.setenv("TAPEFLOW_BINANCE_API_SECRET", SECRET)
    s = Settings(home=tmp_path, broker="127.0.0.1:1")  # keys from the environment, as in production
    code, logs = await run(s, "live", OPT_IN)
    assert code == 2
    [refusal] = [e for e in logs if e["event"] == "executor refused to start"]
    assert "cannot reach the exchange at http://127.0.0.1:" in refusal["reason"]  # past every check
    [echo] = [e for e in logs if e["event"].startswith("executor configuration")]
    assert echo["binance_api_key"] == "present" and echo["mode"] == "live"
    assert echo["exchange_rest_url"].startswith("http://127.0.0.1:") and echo["orphan_policy"] == "flatten"
    assert echo["executor"]["risk"]["daily_loss_limit_r"] == 5.0  # the config is echoed for confirmation
    rendered = "\n".join(repr(e) for e in logs)
    out, err = capfd.readouterr()
    for text in (rendered, out, err):
        assert KEY not in text and SECRET not in text
        assert KEY[:12] not in text and SECRET[-12:] not in text


async def test_rendered_log_lines_do_not_contain_keys_either(tmp_path, capsys):
    """Same check on the text a console/JSON renderer would print, not only the event dicts."""
    import io

    buf = io.StringIO()
    saved = structlog.get_config()
    structlog.configure(
        processors=[structlog.processors.JSONRenderer()],
        logger_factory=structlog.PrintLoggerFactory(buf),
        cache_logger_on_first_use=False,
    )
    try:
        code = await run_executor(
            settings(tmp_path, binance_api_key=KEY, binance_api_secret=SECRET),
            "live",
            ExecuteOptions(config_path=loopback_config(tmp_path)),
            environ=OPT_IN,
        )
    finally:
        structlog.configure(**saved)
    text = buf.getvalue()
    assert code == 2 and "cannot reach the exchange" in text and '"present"' in text
    assert KEY not in text and SECRET not in text


def test_mode_checks_directly(tmp_path):
    s = settings(tmp_path)
    check_mode_allowed("paper", s, {})  # paper needs nothing
    with pytest.raises(LiveTradingRefused, match="unknown mode"):
        check_mode_allowed("real", s, OPT_IN)
    keyed = settings(tmp_path, binance_api_key=KEY, binance_api_secret=SECRET)
    with pytest.raises(BrokerUnavailable, match="cannot reach the exchange"):
        build_broker("testnet", load_executor_config(loopback_config(tmp_path)), keyed)
    with pytest.raises(LiveTradingRefused, match="needs exchange keys"):
        build_broker("testnet", load_executor_config(loopback_config(tmp_path)), s)
    # a testnet run aimed at the live hosts (or back) is refused before any connection is made
    with pytest.raises(LiveTradingRefused, match="Binance live endpoint"):
        build_broker("testnet", ExecutorConfig(exchange=ExchangeVenue(rest_url="https://fapi.binance.com")), keyed)
    with pytest.raises(LiveTradingRefused, match="Binance testnet endpoint"):
        build_broker("live", ExecutorConfig(exchange=ExchangeVenue(ws_url="wss://stream.binancefuture.com")), keyed)
    assert build_broker("paper", ExecutorConfig()).mode == "paper"
    echo = startup_echo(settings(tmp_path, binance_api_key=KEY), "paper", ExecutorConfig())
    assert echo["binance_api_key"] == "present" and echo["binance_api_secret"] == "absent"
    assert KEY not in repr(echo)


def test_exchange_endpoints_from_settings_then_executor_config_then_binance(tmp_path, monkeypatch):
    from execution.safety import exchange_endpoints

    config = ExecutorConfig()
    assert exchange_endpoints("testnet", config, Settings(home=tmp_path)) == (
        "https://testnet.binancefuture.com",
        "wss://stream.binancefuture.com",
    )
    assert exchange_endpoints("live", config, Settings(home=tmp_path)) == (
        "https://fapi.binance.com",
        "wss://fstream.binance.com",
    )
    configured = ExecutorConfig.model_validate({"exchange": {"rest_url": "http://127.0.0.1:1/"}})
    assert exchange_endpoints("testnet", configured, Settings(home=tmp_path))[0] == "http://127.0.0.1:1"
    monkeypatch.setenv("TAPEFLOW_BINANCE_REST_URL", "http://127.0.0.1:2")
    monkeypatch.setenv("TAPEFLOW_BINANCE_WS_URL", "ws://127.0.0.1:3/")
    assert exchange_endpoints("testnet", configured, Settings(home=tmp_path)) == (
        "http://127.0.0.1:2",
        "ws://127.0.0.1:3",
    )
