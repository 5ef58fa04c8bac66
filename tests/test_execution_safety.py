"""Live and testnet refuse to start without the opt-in and keys; secrets never reach a log line."""

from __future__ import annotations

import pytest
import structlog
from structlog.testing import capture_logs

from execution.config import ExecutorConfig
from execution.safety import (
    LIVE_OPT_IN_ENV,
    BrokerUnavailable,
    LiveTradingRefused,
    build_broker,
    check_mode_allowed,
    startup_echo,
)
from execution.service import ExecuteOptions, run_executor
from tapeflow.settings import Settings

KEY = "kEy-4f9c2b7d1e8a6f30-secret-value"
SECRET = "sEcReT-9a8b7c6d5e4f3a2b1c0d-value"
OPT_IN = {LIVE_OPT_IN_ENV: "I_UNDERSTAND"}


def settings(tmp_path, **kw) -> Settings:
    return Settings(home=tmp_path, broker="127.0.0.1:1", **kw)


async def run(s: Settings, mode: str, environ: dict) -> tuple[int, list[dict]]:
    with capture_logs() as logs:
        code = await run_executor(s, mode, ExecuteOptions(), environ=environ)
    return code, logs


@pytest.mark.parametrize("mode", ["live", "testnet"])
async def test_refuses_without_the_opt_in(tmp_path, mode):
    code, logs = await run(settings(tmp_path, binance_api_key=KEY, binance_api_secret=SECRET), mode, {})
    assert code == 2
    [refusal] = [e for e in logs if e["event"] == "executor refused to start"]
    assert LIVE_OPT_IN_ENV in refusal["reason"] and "I_UNDERSTAND" in refusal["reason"]
    code, _ = await run(settings(tmp_path, binance_api_key=KEY, binance_api_secret=SECRET), mode,
                        {LIVE_OPT_IN_ENV: "yes"})
    assert code == 2  # only the exact phrase counts


@pytest.mark.parametrize("missing", ["binance_api_key", "binance_api_secret", "both"])
async def test_refuses_without_keys(tmp_path, missing):
    keys = {"binance_api_key": KEY, "binance_api_secret": SECRET}
    for name in (keys if missing == "both" else [missing]):
        keys[name] = None
    code, logs = await run(settings(tmp_path, **keys), "live", OPT_IN)
    assert code == 2
    [refusal] = [e for e in logs if e["event"] == "executor refused to start"]
    assert "needs exchange keys" in refusal["reason"]
    if missing != "binance_api_secret":
        assert "TAPEFLOW_BINANCE_API_KEY" in refusal["reason"]


async def test_with_opt_in_and_keys_it_stops_at_the_missing_binance_broker_and_never_logs_keys(tmp_path, capfd,
                                                                                                  monkeypatch):
    monkeypatch.setenv("TAPEFLOW_BINANCE_API_KEY", KEY)
    monkeypatch.setenv("TAPEFLOW_BINANCE_API_SECRET", SECRET)
    s = Settings(home=tmp_path, broker="127.0.0.1:1")  # keys from the environment, as in production
    code, logs = await run(s, "live", OPT_IN)
    assert code == 2
    [refusal] = [e for e in logs if e["event"] == "executor refused to start"]
    assert "Binance broker not available yet" in refusal["reason"]
    [echo] = [e for e in logs if e["event"].startswith("executor configuration")]
    assert echo["binance_api_key"] == "present" and echo["mode"] == "live"
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
    structlog.configure(processors=[structlog.processors.JSONRenderer()],
                        logger_factory=structlog.PrintLoggerFactory(buf), cache_logger_on_first_use=False)
    try:
        code = await run_executor(settings(tmp_path, binance_api_key=KEY, binance_api_secret=SECRET), "live",
                                  ExecuteOptions(), environ=OPT_IN)
    finally:
        structlog.configure(**saved)
    text = buf.getvalue()
    assert code == 2 and "Binance broker not available yet" in text and '"present"' in text
    assert KEY not in text and SECRET not in text


def test_mode_checks_directly(tmp_path):
    s = settings(tmp_path)
    check_mode_allowed("paper", s, {})  # paper needs nothing
    with pytest.raises(LiveTradingRefused, match="unknown mode"):
        check_mode_allowed("real", s, OPT_IN)
    with pytest.raises(BrokerUnavailable, match="Binance broker not available yet"):
        build_broker("testnet", ExecutorConfig())
    assert build_broker("paper", ExecutorConfig()).mode == "paper"
    echo = startup_echo(settings(tmp_path, binance_api_key=KEY), "paper", ExecutorConfig())
    assert echo["binance_api_key"] == "present" and echo["binance_api_secret"] == "absent"
    assert KEY not in repr(echo)
