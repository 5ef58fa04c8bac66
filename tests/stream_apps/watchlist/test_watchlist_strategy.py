"""Watchlist strategies as config: the file's validation and hash, the triggers on
hand-built feature values, the re-check against the swept books at entry, the model's gate with a
missing factor, deterministic signal ids and the cooldown. Pure, in process."""

from __future__ import annotations

import json
import math

import pytest

from execution.client_ids import client_order_id
from stream_apps.core.strategy import StrategyConfigError
from stream_apps.cross_venue.events import BookEvent
from stream_apps.watchlist.model import DEFAULT_FACTORS, PairModel, load_model
from stream_apps.watchlist.signals import WatchlistSignals, check_triggers, recheck, signal_id
from stream_apps.watchlist.strategy import load_watchlist_strategy, parse_watchlist_strategy
from tests.support.paths import REPO

T = 1_704_096_000_000  # on every grid
FEE = 0.0005

BASE = {
    "kind": "watchlist",
    "name": "xv_test",
    "version": "1",
    "venues": ["binance", "okx"],
    "notional_usd": 1_000,
    "cooldown": "10m",
    "triggers": {"min_z": 2.0, "min_window_samples": 30, "min_net_spread_bp": 5},
}


def strategy(**overrides):
    return parse_watchlist_strategy({**BASE, **overrides})


def record(
    sell="binance",
    buy="okx",
    t=T,
    spread=0.0040,
    mean=0.0010,
    std=0.0010,
    n=60,
    funding_8h=0.0001,
    missing=None,
    **stats,
):
    return {
        "feature_id": f"BTC:{t}:{sell}:{buy}",
        "coin": "BTC",
        "eval_time": t,
        "sell_venue": sell,
        "buy_venue": buy,
        "sell_symbol": "BTCUSDT" if sell == "binance" else "BTC-USDT-SWAP",
        "buy_symbol": "BTCUSDT" if buy == "binance" else "BTC-USDT-SWAP",
        "spread_sweep": spread,
        "funding_diff_8h": funding_8h,
        "sweep_slope_per_min": -1e-5,
        "stats": {
            "sweep_1h_n": n,
            "sweep_1h_mean": mean,
            "sweep_1h_std": std,
            "sweep_1h_min": -0.001,
            "sweep_1h_max": 0.005,
            "sweep_1h_crossings_per_hour": 4.0,
            "sweep_1h_drift_ratio": 0.2,
            **stats,
        },
        "missing": missing or {},
    }


def books(t=T, binance_bids=((101.0, 5.0), (100.9, 5.0)), okx_asks=((100.4, 3.0), (100.6, 10.0))):
    """Binance rich, OKX cheap: selling 1,000 USD into binance's bids takes 5 coins at 101.0 (505 USD),
    then 495 USD at 100.9; buying 1,000 USD from okx's asks takes 3 coins at 100.4 (301.2 USD), then 698.8 USD at 100.6."""
    return {
        "binance": BookEvent("binance", "BTCUSDT", t - 100, tuple(binance_bids), ((101.2, 5.0),)),
        "okx": BookEvent("okx", "BTC-USDT-SWAP", t - 300, ((100.2, 5.0),), tuple(okx_asks)),
    }


def test_a_strategy_file_is_validated_with_one_line_errors_and_hashed_by_meaning(tmp_path):
    yaml_file = tmp_path / "xv.yaml"
    yaml_file.write_text(
        "kind: watchlist\nname: xv_test\nversion: '1'\ncooldown: 30m\ntriggers: {min_net_spread_bp: 5}\n"
    )
    json_file = tmp_path / "xv.json"
    json_file.write_text(
        json.dumps(
            {
                "triggers": {"min_net_spread_bp": 5.0},
                "cooldown": 1_800_000,
                "version": "1",
                "name": "xv_test",
                "kind": "watchlist",
            }
        )
    )
    a, b = load_watchlist_strategy(yaml_file), load_watchlist_strategy(json_file)
    assert a.config_hash == b.config_hash and a.cooldown == 1_800_000
    assert strategy().config_hash != strategy(notional_usd=2_000).config_hash
    cases = {
        "triggers: {}\n": "triggers: set at least one of min_z, min_net_spread_bp, min_funding_diff_8h",
        "triggers: {min_z: 2}\nspeed: 3\n": "speed: Extra inputs are not permitted",
        "triggers: {min_z: 2}\ncooldown: 5x\n": "cooldown: invalid duration '5x'",
        "triggers: {min_z: 2}\nvenues: [okx]\n": "venues: at least two, each once",
        "triggers: {min_z: 2}\nmodel: {file: nowhere.json, min_win_prob: 0.6}\n": "model.file: cannot read",
        "triggers: {min_z: 2}\nmodel: {file: m.json}\n": "model: set min_expected_pnl_bp and/or min_win_prob",
    }
    for body, words in cases.items():
        bad = tmp_path / "bad.yaml"
        bad.write_text("kind: watchlist\nname: xv_test\nversion: '1'\n" + body)
        with pytest.raises(StrategyConfigError) as error:
            load_watchlist_strategy(bad)
        assert words in str(error.value) and "\n" not in str(error.value), body
    shipped = load_watchlist_strategy(REPO / "stream_apps/watchlist/strategies/xv_convergence.yaml")
    assert shipped.name == "xv_convergence" and shipped.triggers.min_z == 2.0 and shipped.model is None
    directional = tmp_path / "v53.yaml"
    directional.write_text("name: v53\nversion: '1'\n")
    with pytest.raises(StrategyConfigError, match="kind: expected 'watchlist'"):
        load_watchlist_strategy(directional)
    # the model file's bytes are part of the hash: a refitted model is a new config
    model = PairModel(("spread",), (0.0,), (1.0,), (0.0, 1.0), (0.0, 1.0), 600_000, 0.002)
    model.save(tmp_path / "m.json")
    ref = tmp_path / "with_model.yaml"
    ref.write_text(
        "kind: watchlist\nname: xv_test\nversion: '1'\ntriggers: {min_z: 2}\nmodel: {file: m.json, min_win_prob: 0.6}\n"
    )
    first = load_watchlist_strategy(ref).config_hash
    PairModel(("spread",), (0.0,), (1.0,), (0.0, 2.0), (0.0, 1.0), 600_000, 0.002).save(tmp_path / "m.json")
    assert load_watchlist_strategy(ref).config_hash != first
    assert load_model(tmp_path / "m.json").linear == (0.0, 2.0)


def test_triggers_on_hand_built_feature_values():
    s = strategy()
    fired = check_triggers(s, record())
    # z = (0.0040 - 0.0010) / 0.0010 = 3; four fees of 5 bp = 20 bp: 40 - 20 = 20 bp net
    assert fired.fired and fired.z == pytest.approx(3.0) and fired.net_spread == pytest.approx(0.0020)
    low_z = check_triggers(s, record(mean=0.0030))  # z = 1
    assert not low_z.fired and low_z.reason == "z 1 below 2"
    thin = check_triggers(s, record(spread=0.0024, mean=0.0, std=0.001))  # z 2.4, net 4 bp < 5 bp
    assert not thin.fired and thin.reason.startswith("net spread 0.0004 below 0.0005")
    filling = check_triggers(s, record(n=10))
    assert not filling.fired and filling.reason == "z missing: 1 h window has 10 samples, needs 30"
    stale = check_triggers(s, record(spread=None, missing={"spread_sweep": "stale leg okx: 3.2 s old"}))
    assert stale.reason == "z missing: stale leg okx: 3.2 s old"
    funding = strategy(triggers={"min_funding_diff_8h": 0.0002})
    assert not check_triggers(funding, record()).fired
    assert check_triggers(funding, record(funding_8h=0.0003)).fired
    assert check_triggers(
        funding, record(funding_8h=None, missing={"funding_diff_8h": "funding interval of binance not known yet"})
    ).reason == ("funding diff 8h missing: funding interval of binance not known yet")
    per_venue = strategy(fees={"default": FEE, "venues": {"okx": 0.0002}})  # 2 x (5 + 2) bp = 14 bp
    assert check_triggers(per_venue, record()).net_spread == pytest.approx(0.0040 - 0.0014)


def test_entry_is_rechecked_on_the_books_swept_for_the_order_notional():
    s = strategy()
    r = recheck(s, "binance", "okx", books(), T)
    sell_vwap, buy_vwap = 1_000 / (5 + 495 / 100.9), 1_000 / (3 + 698.8 / 100.6)
    assert r.sell_vwap == pytest.approx(sell_vwap, rel=1e-12) and r.buy_vwap == pytest.approx(buy_vwap, rel=1e-12)
    assert r.spread == pytest.approx(math.log(sell_vwap / buy_vwap), rel=1e-12) and r.reason is None
    assert r.net_spread == pytest.approx(r.spread - 4 * FEE)
    # the features said 40 bp, the books say less after fees at this notional: rejected, with the number
    flat = books(binance_bids=((100.7, 20.0),))
    r = recheck(s, "binance", "okx", flat, T)
    assert (
        r.reason
        == f"executable spread after fees {(math.log(100.7 / buy_vwap) - 4 * FEE) / 1e-4:.2f} bp at entry, below 5 bp"
    )
    stale = {**books(), "okx": books(t=T - 2_500)["okx"]}
    assert recheck(s, "binance", "okx", stale, T).reason == "okx book 2.8 s old at entry, limit 2.0 s"
    thin = books(okx_asks=((100.4, 1.0),))
    assert (
        recheck(s, "binance", "okx", thin, T).reason
        == "okx: insufficient depth: asks hold 100 USD of 1,000 in 1 levels"
    )
    skewed = {**books(), "okx": BookEvent("okx", "BTC-USDT-SWAP", T - 1_500, ((100.2, 5.0),), ((100.4, 20.0),))}
    assert recheck(s, "binance", "okx", skewed, T).reason == "books 1400 ms apart, limit 1000 ms"


def test_signals_have_deterministic_ids_a_cooldown_and_a_rejection_reason():
    s = strategy()
    state = WatchlistSignals(s)
    # both directions fire on the features (hand-made); the better net spread is taken, the other is in cooldown
    out = state.evaluate([record("okx", "binance", spread=0.0035, mean=0.0, std=0.001), record()], books(), T)
    assert [(o["sell_venue"], o["status"]) for o in out] == [("binance", "signal")]
    sid = out[0]["signal_id"]
    assert sid == signal_id(s, "BTC", "binance", "okx", T) == f"xv:xv_test:1:{s.config_hash[:12]}:BTC:binance>okx:{T}"
    assert state.counters["cooldown"] == 1
    again = WatchlistSignals(s).evaluate([record()], books(), T)  # a re-run: same id, same client ids
    assert again == out and client_order_id(again[0]["signal_id"], "pair_short_entry") == client_order_id(
        sid, "pair_short_entry"
    )
    assert state.evaluate([record(t=T + 15_000)], books(T + 15_000), T + 15_000) == []  # cooldown 10 min
    assert state.evaluate([record(t=T + 1_000)], books(T + 1_000), T + 1_000) == []  # off the 15 s grid
    held = WatchlistSignals(s)  # a pair key that holds a pair (the hedged model's active_by_key) waits
    assert held.evaluate([record()], books(), T, {"BTC:binance/okx"}) == [] and held.counters["held"] == 1
    later = T + 600_000
    rejected = state.evaluate([record(t=later)], books(later, binance_bids=((100.7, 20.0),)), later)
    assert rejected[0]["status"] == "rejected" and rejected[0]["reason"].startswith("recheck: executable spread")
    # a rejection starts no cooldown: the next point signals
    assert state.evaluate([record(t=later + 15_000)], books(later + 15_000), later + 15_000)[0]["status"] == "signal"
    restored = WatchlistSignals.from_dict(s, None, json.loads(json.dumps(state.to_dict())))
    assert restored.to_dict() == state.to_dict()


def test_the_model_gate_imputes_a_missing_factor_or_says_why_there_is_no_prediction(tmp_path):
    n = len(DEFAULT_FACTORS)
    model = PairModel(
        DEFAULT_FACTORS,
        (0.0,) * n,
        (1.0,) * n,
        (0.001,) + (0.0,) * n,
        (2.0,) + (0.0,) * (n - 1) + (1_000.0,),
        600_000,
        0.002,
    )  # win prob rises with funding_8h
    model.save(tmp_path / "m.json")
    base = {**BASE, "model": {"file": "m.json", "min_expected_pnl_bp": 5, "min_win_prob": 0.8, "max_imputed": 1}}
    s = parse_watchlist_strategy(base, "t", tmp_path)
    out = WatchlistSignals(s, load_model(tmp_path / "m.json")).evaluate([record()], books(), T)
    assert out[0]["status"] == "signal" and out[0]["expected_pnl"] == pytest.approx(0.001)
    assert out[0]["win_prob"] == pytest.approx(1 / (1 + math.exp(-2.1))) and out[0]["imputed"] == {}
    # funding unknown: imputed at its training mean (0 here), the prediction says so, still a prediction
    why = "funding interval of okx not known yet"
    no_funding = record(funding_8h=None, missing={"funding_diff_8h": why})
    out = WatchlistSignals(s, model).evaluate([no_funding], books(), T)
    assert out[0]["imputed"] == {"funding_8h": why} and out[0]["win_prob"] == pytest.approx(1 / (1 + math.exp(-2.0)))
    # two missing with max_imputed 1: no prediction, rejected with every reason
    no_slope = {
        **no_funding,
        "sweep_slope_per_min": None,
        "missing": {**no_funding["missing"], "sweep_slope_per_min": "slope window has 1 sample"},
    }
    out = WatchlistSignals(s, model).evaluate([no_slope], books(), T)
    assert out[0]["status"] == "rejected" and out[0]["reason"] == (
        f"model: missing factor(s) slope: slope window has 1 sample; funding_8h: {why}"
    )
    skip = parse_watchlist_strategy({**base, "model": {**base["model"], "missing": "skip"}}, "t", tmp_path)
    assert WatchlistSignals(skip, model).evaluate([no_funding], books(), T)[0]["reason"] == (
        f"model: missing factor(s) funding_8h: {why}"
    )
    picky = parse_watchlist_strategy({**base, "model": {**base["model"], "min_win_prob": 0.9}}, "t", tmp_path)
    assert WatchlistSignals(picky, model).evaluate([record()], books(), T)[0]["reason"] == (
        "model: win probability 0.891 below 0.9"
    )
    with pytest.raises(ValueError, match="needs its model"):
        WatchlistSignals(s)


def test_hysteresis_a_reentry_cooldown_after_a_close_and_a_cap_on_opens_per_minute():
    s = strategy(cooldown="1s", reentry_cooldown="5m", max_opens_per_minute=2)
    state = WatchlistSignals(s)
    # the key's last pair closed 4 min 59 s ago: no signal (counted); 5 min after the close it may fire
    closed = {"BTC:binance/okx": T - 299_000}
    assert state.evaluate([record()], books(), T, (), closed) == [] and state.counters["reentry_cooldown"] == 1
    closed = {"BTC:binance/okx": T - 300_000}
    assert state.evaluate([record()], books(), T, (), closed)[0]["status"] == "signal"
    # two signals in the last 60 s of event time (cooldown 1 s: the same key fires again): the third is refused
    t2, t3, t4 = T + 15_000, T + 30_000, T + 60_000
    assert state.evaluate([record(t=t2)], books(t2), t2)[0]["status"] == "signal"
    capped = state.evaluate([record(t=t3)], books(t3), t3)
    assert capped[0]["status"] == "rejected" and capped[0]["reason"].startswith(
        "limit: 2 pairs opened in the last minute"
    )
    # at T + 60 s the signal at T is a minute old: one in the window, so this one passes
    assert state.evaluate([record(t=t4)], books(t4), t4)[0]["status"] == "signal"
    restored = WatchlistSignals.from_dict(s, None, json.loads(json.dumps(state.to_dict())))
    assert restored.recent == [t2, t4] == state.recent


def test_the_exit_band_must_sit_below_the_entry_and_new_defaults_keep_the_hash():
    # entry at 5 bp net + four fees 20 bp = 25 bp swept; an exit at 25 bp would close at the entry spread
    with pytest.raises(StrategyConfigError, match="exit_spread_bp 25 must be below the entry's spread 25 bp"):
        strategy(exits={"exit_spread_bp": 25})
    assert strategy(exits={"exit_spread_bp": 24.9}).exits.exit_spread_bp == 24.9
    # fields added later (leg fills) do not change the hash of a strategy that leaves them at their defaults
    plain = strategy()
    assert strategy(legs=None, reentry_cooldown=0, max_opens_per_minute=None).config_hash == plain.config_hash
    assert strategy(legs={"default_latency_ms": 50}).config_hash != plain.config_hash
    assert strategy(reentry_cooldown="1m").config_hash != plain.config_hash
    with pytest.raises(StrategyConfigError, match="retries"):
        strategy(legs={"retries": 11})


def test_a_signal_carries_its_forecast_carry_and_the_hours_to_break_even_after_four_fees_and_both_sweeps():
    s = strategy()
    [out] = WatchlistSignals(s).evaluate([record(funding_8h=0.0001)], books(), T)
    # sell 1,000 USD into binance's bids: 5 at 101 and 495 / 100.9 -> VWAP 1,000 / 9.90585, touch 101
    sell_vwap = 1_000 / (5 + 495 / 100.9)
    # buy 1,000 USD from okx's asks: 3 at 100.4 and 698.8 / 100.6 -> VWAP 1,000 / 9.94632, touch 100.4
    buy_vwap = 1_000 / (3 + 698.8 / 100.6)
    sweeps = (101 - sell_vwap) / 101 + (buy_vwap - 100.4) / 100.4
    assert out["entry_sweep_cost"] == pytest.approx(sweeps)
    assert out["expected_carry_8h_usd"] == pytest.approx(0.0001 * 1_000)  # 0.10 USD per 8 h, a forecast
    assert out["break_even_hours"] == pytest.approx((4 * FEE + sweeps) / 0.0001 * 8)  # ~ 184 h
    [paying] = WatchlistSignals(s).evaluate([record(funding_8h=-0.0001)], books(), T)
    assert paying["break_even_hours"] is None and paying["expected_carry_8h_usd"] == pytest.approx(-0.1)
