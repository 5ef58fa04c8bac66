"""A start from minute bars: the engine fed 1m bars for all but the last 65 minutes and trades
after computes, at its first valid evaluations, what an engine that saw every trade of the 25 h computes,
but for what the record's ``approx_until_ms`` says is approximated (the size quantiles and what they
classify: large-trade flow) and the coverage start (the first bar's minute, not its first trade).

Hand-checkable part: the 24-hour CVD of both equals the signed sum of the trades of the window, computed
here directly from the arrays."""

from __future__ import annotations

import numpy as np

from stream_apps.core.engine import Engine, EngineOutput
from stream_apps.core.features import DETAIL_NEEDED_MS
from stream_apps.core.minute_bars import minute_bars_from_trades
from stream_apps.core.strategy import parse_strategy
from stream_apps.core.synthetic import synthetic_trades

MIN, HOUR = 60_000, 3_600_000
T0 = 1_700_000_040_000  # a minute boundary
NOW = T0 + 26 * HOUR
DETAIL = 62 * MIN
STRATEGY = parse_strategy(
    {
        "name": "warm_24h",
        "version": "1",
        "windows": {"cvd_fast": "30m", "cvd_mid": "4h"},
        "warmup": "24h",
        "weights": {"direction": 55, "crowding": 0, "environment": 0, "auxiliary": 0},
        "thresholds": {"entry": 40, "heavy": 50, "flip": 50},
        "cooldown": "10m",
        "exits": {"sl_atr_mult": 1.0, "tp1_r": 0.5, "tp2_r": 1.0, "timeout_min": 30},
    }
)
APPROXIMATED = {
    "p95_qty",
    "p99_qty",
    "qty_samples",
    "large_buy_qty_15m",
    "large_sell_qty_15m",
    "large_net_qty_15m",
    "coverage_start_ms",
    "approx_until_ms",
}


def _run(trades, events=()) -> EngineOutput:
    engine = Engine([STRATEGY])
    out = EngineOutput()
    out.extend(engine.process([], list(events), now_ms=None))
    for start in range(0, len(trades), 5_000):
        chunk = trades.take(slice(start, start + 5_000))
        out.extend(engine.process([chunk], [], now_ms=int(chunk.time_ms[-1])))
    out.extend(engine.process([], [], now_ms=NOW))
    return out


def test_minute_bars_then_trades_give_the_features_of_all_trades_but_what_is_stated_approximated():
    trades = synthetic_trades("BTCUSDT", start_ms=T0, duration_ms=NOW - T0, rate_per_s=0.2, seed=11, median_qty=2.0)
    split = int(np.searchsorted(trades.time_ms, NOW - DETAIL))
    full = _run(trades)
    bars = minute_bars_from_trades(trades.take(slice(0, split)))
    warm = _run(trades.take(slice(split, None)), bars)

    def valid(out):
        return {r["eval_time"]: r for r in out.features if r["block_reason"] != "warmup" and r["eval_time"] <= NOW}

    a, b = valid(full), valid(warm)
    # valid once the trades cover the longest window read from seconds (1 h and two slope steps)
    assert NOW - DETAIL + DETAIL_NEEDED_MS <= min(b) < NOW - DETAIL + DETAIL_NEEDED_MS + 15_000
    common = sorted(set(a) & set(b))
    assert len(common) > 20 and common == sorted(b)
    for t in common:
        ra, rb = a[t]["inputs"], b[t]["inputs"]
        assert rb["approx_until_ms"] == NOW - DETAIL and "approx_until_ms" not in ra
        assert set(ra) | {"approx_until_ms"} == set(rb)
        for name in set(ra) - APPROXIMATED:
            assert rb[name] == ra[name] or abs(rb[name] - ra[name]) <= 1e-9 * max(1.0, abs(ra[name])), (t, name)
    # the 24-hour CVD by hand at the last common time: taker buys minus taker sells of [t - 24 h, t)
    t = common[-1]
    window = (trades.time_ms >= t - 24 * HOUR) & (trades.time_ms < t)
    by_hand = float(np.where(trades.taker_sell[window], -trades.qty[window], trades.qty[window]).sum())
    assert abs(b[t]["inputs"]["cvd_1d"] - by_hand) < 1e-6 and abs(a[t]["inputs"]["cvd_1d"] - by_hand) < 1e-6
