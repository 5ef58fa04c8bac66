"""Sizing, client order ids and the executor config file."""

from __future__ import annotations

import pytest

from execution.client_ids import (
    BINANCE_CLIENT_ID,
    LEG_CODES,
    client_order_id,
    position_id,
)
from execution.config import ExecutorConfig, ExecutorConfigError, load_executor_config
from execution.domain import InvalidSignal, Signal
from execution.sizing import SizingError, position_size, r_usd_for_tier
from tests.support.execution import signal_record


# --- sizing ---------------------------------------------------------------------------------------------
def test_one_r_is_risk_percent_of_balance_times_tier():
    cfg = ExecutorConfig()
    assert r_usd_for_tier(cfg, "standard") == 200.0  # 10,000 x 2 %
    assert r_usd_for_tier(cfg, "heavy") == 300.0  # x 1.5
    cfg = ExecutorConfig(balance=5_000, risk_pct=1.0, tier_multipliers={"standard": 1.0, "heavy": 2.0})
    assert r_usd_for_tier(cfg, "heavy") == 100.0
    with pytest.raises(SizingError):
        r_usd_for_tier(cfg, "light")
    assert r_usd_for_tier(cfg, "heavy", signal_multiplier=1.25) == 62.5  # the strategy's multiplier wins


def test_the_signal_carries_the_strategy_tier_multiplier():
    rec = signal_record(tier="heavy")
    assert Signal.from_record(rec).risk_multiplier is None
    rec["factors"]["risk_multiplier"] = 2.0
    assert Signal.from_record(rec).risk_multiplier == 2.0
    rec["factors"]["risk_multiplier"] = -1.0
    with pytest.raises(InvalidSignal):
        Signal.from_record(rec)


def test_quantity_loses_exactly_r_usd_at_the_stop():
    size = position_size(200.0, 262.0 * 1.5)  # BTC: ATR 262, sl_atr_mult 1.5 -> R = 393 USDT
    assert size.qty * 393.0 == pytest.approx(200.0) and size.r_usd == 200.0
    # rounded down to the lot step: never risk more than budgeted; r_usd is what is really at risk
    stepped = position_size(200.0, 393.0, qty_step=0.001)
    assert stepped.qty == pytest.approx(0.508) and stepped.r_usd == pytest.approx(0.508 * 393.0) and stepped.r_usd < 200
    with pytest.raises(SizingError):
        position_size(1.0, 393.0, qty_step=0.01)  # rounds to zero
    with pytest.raises(SizingError):
        position_size(200.0, 0.0)


# --- client order ids -------------------------------------------------------------------------------------
def test_client_ids_are_deterministic_short_valid_and_unique_per_leg():
    sid = "v53:0f3a9c:binance:BTCUSDT:1790000000000:LONG"
    ids = {leg: client_order_id(sid, leg) for leg in LEG_CODES}
    assert ids == {leg: client_order_id(sid, leg) for leg in LEG_CODES}  # same input, same id
    assert len(set(ids.values())) == len(LEG_CODES)
    retry = client_order_id(sid, "sl", attempt=1)
    assert retry not in ids.values()
    for cid in list(ids.values()) + [retry, client_order_id(sid, "exit", 999)]:
        assert BINANCE_CLIENT_ID.match(cid) and len(cid) <= 36, cid
    # one character of difference in the signal id gives unrelated ids
    other = client_order_id(sid.replace("LONG", "SHORT"), "entry")
    assert other != ids["entry"] and other[:12] != ids["entry"][:12]
    assert position_id(sid) != position_id(sid[:-1]) and position_id(sid) == position_id(sid)


def test_client_ids_do_not_collide_over_many_signals():
    ids = {client_order_id(f"v53:h:binance:BTCUSDT:{1790000000000 + i * 15000}:LONG", "entry") for i in range(50_000)}
    assert len(ids) == 50_000


def test_client_ids_reject_bad_input():
    with pytest.raises(ValueError):
        client_order_id("s", "stop")
    with pytest.raises(ValueError):
        client_order_id("", "entry")
    with pytest.raises(ValueError):
        client_order_id("s", "entry", attempt=1000)


# --- config and signal parsing ----------------------------------------------------------------------------
def test_config_file_is_validated(tmp_path):
    good = tmp_path / "exec.yaml"
    good.write_text("balance: 20000\nrisk:\n  daily_loss_limit_r: 3\nfees:\n  taker: 0.0004\n")
    cfg = load_executor_config(good)
    assert cfg.base_r_usd == 400.0 and cfg.risk.daily_loss_limit_r == 3 and cfg.fees.taker == 0.0004
    assert cfg.fees.maker == 0.0002 and cfg.risk.max_consecutive_losses == 5  # untouched defaults
    typo = tmp_path / "typo.yaml"
    typo.write_text("risk:\n  daly_loss_limit_r: 3\n")
    with pytest.raises(ExecutorConfigError, match="risk.daly_loss_limit_r: unknown setting"):
        load_executor_config(typo)
    bad = tmp_path / "bad.yaml"
    bad.write_text("tier_multipliers: {standard: 1.0, heavy: 0}\n")
    with pytest.raises(ExecutorConfigError, match="heavy"):
        load_executor_config(bad)
    assert load_executor_config(None) == ExecutorConfig()


def test_signals_with_an_inconsistent_exit_plan_are_refused():
    Signal.from_record(signal_record())
    for change in ({"sl_r": 1.5}, {"tp1_r": 2.0, "tp2_r": 1.0}, {"risk_distance": 0.0}, {"direction": "UP"}):
        with pytest.raises(InvalidSignal):
            Signal.from_record({**signal_record(), **change})
