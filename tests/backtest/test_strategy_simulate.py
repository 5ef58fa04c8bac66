"""`backtest.simulate_candidate` and `backtest.sensitivity`: which active strategy a candidate is
measured against, the window, the A/B numbers against separate runs of each strategy, and the
sensitivity numbers of a planted set of evaluations against a hand computation."""

from __future__ import annotations

import pytest

from backtest.runner import BacktestRunner
from backtest.sensitivity import key_features, sensitivity
from backtest.simulate_candidate import DAY_MS, SimulateError, pair, simulate, window
from backtest.sources.synthetic import SyntheticSource
from stream_apps.core.frame import FeatureFrame
from stream_apps.core.scoring import LONG, SHORT
from stream_apps.core.strategy import parse_strategy
from tests.support.scoring import V51, V53, T, feats

H = 3_600_000
START = 1_704_067_200_000  # 2024-01-01 00:00 UTC
SYMBOLS = ["BTCUSDT", "ETHUSDT"]
RATES = {"BTCUSDT": 2.0, "ETHUSDT": 1.5}
BASE = {
    "name": "stored",
    "version": "1",
    "windows": {"cvd_fast": "5m", "cvd_mid": "30m"},
    "warmup": "30m",
    "weights": {"direction": 55, "crowding": 25, "environment": 15, "auxiliary": 0, "funding": 5, "liquidation": 5},
    "thresholds": {"entry": 55, "heavy": 75, "flip": 75},
    "cooldown": "5m",
    "gates": {"obi_against": {"default": 0.6}, "on_missing_input": "pass"},
    "exits": {"sl_atr_mult": 1.0, "tp1_r": 0.5, "tp2_r": 1.0, "timeout_min": 30},
}
ACTIVE = parse_strategy(BASE)
STRICT = parse_strategy({**BASE, "name": "strict", "thresholds": {"entry": 62, "heavy": 75, "flip": 75}})


def session() -> SyntheticSource:
    return SyntheticSource(SYMBOLS, START, START + 3 * H, seed=11, trades_per_s=RATES)


def test_the_counterpart_is_the_same_name_else_the_only_active_strategy():
    same = parse_strategy({**V53.model_dump(mode="json"), "version": "9"})
    chosen = pair([V51, V53], same)
    assert chosen.active is V53 and chosen.unchanged == ["v51_baseline"]
    # same name in one run: the candidate runs renamed, with every rule unchanged
    assert chosen.run_candidate.name == "v53_candidate"
    assert chosen.run_candidate.model_dump(exclude={"name"}) == same.model_dump(exclude={"name"})
    assert pair([V53], STRICT).active is V53 and pair([V53], STRICT).run_candidate is STRICT
    with pytest.raises(SimulateError, match=r"named 'strict' and the active config runs v51_baseline, v53: name"):
        pair([V51, V53], STRICT)


def test_the_window_ends_just_after_the_newest_trade_or_at_to():
    assert window(5_000, 0.5, None) == (5_001 - DAY_MS // 2, 5_001)
    assert window(5_000, 2, 10 * DAY_MS) == (8 * DAY_MS, 10 * DAY_MS)
    with pytest.raises(SimulateError, match="holds no trades"):
        window(None, 1, None)
    with pytest.raises(SimulateError, match="--days must be > 0"):
        window(5_000, 0, None)


def test_an_identical_candidate_has_zero_deltas_and_the_active_numbers_of_a_lone_run():
    candidate = parse_strategy(BASE)  # the same content, loaded again
    sim = simulate(pair([ACTIVE], candidate), session())
    alone = BacktestRunner([ACTIVE])
    result = alone.run(session())
    assert result.signals >= 20 and len(result.trades) >= 5  # a session that trades
    assert sim.active.signals == result.signals
    assert sim.active.trades == len(result.trades)
    assert sim.active.net_r == pytest.approx(sum(t.pnl_r_net for t in result.trades), abs=1e-12)
    opened = {e["signal_id"] for e in alone.position_events() if e["event"] == "opened"}
    assert sim.active.taken == len(opened)
    assert sim.active.skip_rate == pytest.approx(1 - len(opened) / result.signals)
    heavy = sum(1 for s in alone.signals if s["tier"] == "heavy")  # v53-style sizing: heavy is 1.5, standard 1
    assert heavy > 0 and sim.active.size_up == heavy
    assert all(v == 0 for v in sim.delta.values()), sim.delta
    assert (sim.candidate.strategy, sim.candidate.config_hash) == (ACTIVE.name, ACTIVE.config_hash)


def test_a_stricter_candidate_differs_by_what_two_separate_runs_differ_by():
    sim = simulate(pair([ACTIVE], STRICT), session())
    runs = {}
    for cfg in (ACTIVE, STRICT):
        runner = BacktestRunner([cfg])
        result = runner.run(session())
        runs[cfg.name] = (result.signals, len(result.trades), sum(t.pnl_r_net for t in result.trades))
    (sa, ta, ra), (sc, tc, rc) = runs["stored"], runs["strict"]
    assert sc < sa  # the stricter entry lets fewer through: the comparison means something
    assert sim.delta["signals"] == sc - sa
    assert sim.delta["trades"] == tc - ta
    assert sim.delta["net_r"] == pytest.approx(rc - ra, abs=1e-9)
    assert (sim.active.signals, sim.candidate.signals) == (sa, sc)


# --- sensitivity on planted evaluations ------------------------------------------------------------
# layers direction 55, crowding 25, environment 15, auxiliary 5 (raw points = v53's), no gates;
# entry 75, heavy 85; the warm-up is the default 24 h, which feats() covers (coverage from T - 25 h)
PLANTED = parse_strategy(
    {
        "name": "planted",
        "version": "1",
        "windows": {"cvd_fast": "30m", "cvd_mid": "4h"},
        "weights": {"direction": 55, "crowding": 25, "environment": 15, "auxiliary": 5},
        "thresholds": {"entry": 75, "heavy": 85, "flip": 85},
        "exits": {"sl_atr_mult": 2.0, "tp1_r": 0.75, "tp2_r": 1.5, "timeout_min": 240},
    }
)


def planted_rows() -> list:
    """Direction 55 in every directed row (resonance 30, large flow with it 20, acceleration 5)."""
    rows = [
        # 55 + ratio 0.8 (7) + top 0.6 (10) + OI 2.95 % (10) + premium in band (2) = 84, standard;
        # OI x 1.05 = 3.0975 % >= 3 % scores 15: 89, heavy (flip up); x 0.95 stays 10
        dict(long_short_ratio=0.8, top_trader_long_share=0.6, oi_change=0.0295, coinbase_premium=0.0001),
        # 55 + 7 + top 0.56 (10) + OI 4 % (15) + 2 = 89, heavy; top x 0.95 = 0.532 scores 5: 84 (flip down)
        dict(long_short_ratio=0.8, top_trader_long_share=0.56, oi_change=0.04, coinbase_premium=0.0001),
        # 55 + ratio 0.72 (7) + top 0.4 (0) + OI -1 % (5) + premium 0.1 % (5) = 72, no signal; ratio x 0.95
        # = 0.684 < 0.7 scores 10: 75, standard (flip down)
        dict(long_short_ratio=0.72, top_trader_long_share=0.4, oi_change=-0.01, coinbase_premium=0.001),
        # everything far from a level: 55 + 25 + 15 + 5 = 100, heavy whatever moves by 5 %
        dict(),
    ]
    out = [feats(LONG, time_ms=T + i * 15_000, **r) for i, r in enumerate(rows)]
    # not at a decision: fast and mid CVD disagree (no direction); inside the warm-up
    out.append(feats(LONG, time_ms=T + 60_000, cvd=((1_800_000, 100.0), (14_400_000, -400.0))))
    out.append(feats(SHORT, time_ms=T + 75_000, coverage_start_ms=T))
    return out


def test_planted_flip_shares_and_margins_equal_the_hand_computation():
    frame = FeatureFrame.from_features(planted_rows())
    s = sensitivity([frame], PLANTED, 0.05)
    assert key_features(PLANTED) == [
        "cvd_fast",
        "cvd_mid",
        "large_net_qty_15m",
        "cvd_fast_accel",
        "long_short_ratio",
        "top_trader_long_share",
        "oi_change",
        "coinbase_premium",
    ]
    assert (s.evaluations, s.signals) == (4, 3)  # rows 1, 2 and 4 are let through
    flips = {f.feature: (f.up, f.down, f.either) for f in s.flips}
    assert flips == {
        "cvd_fast": (0, 0, 0),  # a relative change never changes a sign
        "cvd_mid": (0, 0, 0),
        "large_net_qty_15m": (0, 0, 0),
        "cvd_fast_accel": (0, 0, 0),
        "long_short_ratio": (0, 0.25, 0.25),
        "top_trader_long_share": (0, 0.25, 0.25),
        "oi_change": (0.25, 0, 0.25),
        "coinbase_premium": (0, 0, 0),
    }
    # raw scores 84, 89, 72, 100: to entry 75 -> 9, 14, 3, 25 (median 11.5); to heavy 85 -> 1, 4, 13, 15 (8.5)
    assert (s.scored, s.entry_margin, s.heavy_margin) == (4, 11.5, 8.5)
    # a wider epsilon: top 0.6 x 0.9 = 0.54 now scores 5 in rows 1 and 4 too, without a tier change
    # (79 stays standard, 95 heavy); the flips stay those of rows 1 and 2
    wide = {f.feature: f.either for f in sensitivity([frame], PLANTED, 0.10).flips}
    assert wide["oi_change"] == 0.25 and wide["top_trader_long_share"] == 0.25


def test_the_run_hands_the_candidates_frames_to_the_sensitivity():
    """The probe reads the engine's frames block by block; the same rows re-scored from the whole
    frames (kept here, all columns) give the same numbers."""
    frames: dict[str, list[FeatureFrame]] = {}

    def keep(table) -> None:
        for block in table.blocks:
            if block.strategy.name == "strict":
                frames.setdefault(block.frame.symbol, []).append(block.frame)

    BacktestRunner([ACTIVE, STRICT], on_features=keep).run(session())
    kept = [frame for symbol in SYMBOLS for frame in frames[symbol]]
    again = sensitivity(kept, STRICT)
    assert 0 < again.evaluations < sum(len(f) for f in kept)  # the warm-up and direction-less rows are out
    assert again.signals > 0 and again.entry_margin is not None
    assert simulate(pair([ACTIVE], STRICT), session()).sensitivity == again
