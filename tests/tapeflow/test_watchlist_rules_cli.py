"""`tapeflow watchlist rules --out FILE` downloads the venues' instrument rules (here from the fake
Binance, Bybit and OKX exchanges) and `tapeflow cross-venue --instrument-rules FILE` gives them to every
strategy's trader; a missing or malformed file is a one-line refusal before anything starts."""

from __future__ import annotations

import asyncio

import pytest
from typer.testing import CliRunner

from execution.instrument_rules import InstrumentRules
from tapeflow.cli import _instrument_rules, _watchlist_traders, app
from tests.execution.test_instrument_rules_fetch import fakes  # noqa: F401  (the fixture)
from tests.support.paths import REPO

pytestmark = pytest.mark.timeout(60)
STRATEGY = REPO / "stream_apps" / "watchlist" / "strategies" / "xv_convergence.yaml"


async def test_rules_written_by_the_command_are_what_the_traders_trade_by(fakes, tmp_path):  # noqa: F811
    out = tmp_path / "rules" / "venues.json"
    args = [
        "watchlist",
        "rules",
        "--out",
        str(out),
        "--binance-url",
        fakes["binance"],
        "--bybit-url",
        fakes["bybit"],
        "--okx-url",
        fakes["okx"],
    ]
    result = await asyncio.to_thread(CliRunner().invoke, app, args, env={"TAPEFLOW_HOME": str(tmp_path / "home")})
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"6 instrument rules (binance 2, bybit 2, okx 2) written to {out}"
    rules = InstrumentRules.load(out)
    [trader] = _watchlist_traders([STRATEGY], _instrument_rules(out))
    assert trader.rules == rules and _watchlist_traders([STRATEGY])[0].rules is None
    params = trader._coin_params("BTC")
    assert {v: params.venue(v).lot_step for v in ("binance", "bybit", "okx")} == {
        "binance": 0.001,
        "bybit": 0.001,
        "okx": 0.0001,
    }
    assert params.venue("binance").min_notional_usd == 5.0 and trader.missing_rules == set()


def test_a_missing_or_bad_rules_file_is_refused_in_one_line(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"version": 1, "rules": [{"venue": "okx"}]}')
    env = {"TAPEFLOW_HOME": str(tmp_path / "home")}
    for path, words in (
        (tmp_path / "none.json", "does not exist (write one with `tapeflow watchlist rules"),
        (bad, "instrument rule"),
    ):
        result = CliRunner().invoke(
            app, ["cross-venue", "--strategy", str(STRATEGY), "--instrument-rules", str(path)], env=env
        )
        assert result.exit_code == 2 and words in result.output, result.output
    result = CliRunner().invoke(
        app,
        [
            "watchlist",
            "rules",
            "--out",
            str(tmp_path / "x.json"),
            "--venues",
            "okx",
            "--okx-url",
            "http://127.0.0.1:9",
            "--timeout-s",
            "2",
        ],
        env=env,
    )
    assert result.exit_code == 1 and "okx: GET http://127.0.0.1:9/api/v5/public/instruments failed" in result.output
    assert not (tmp_path / "x.json").exists()
