"""Hand-built feature snapshots and the shipped strategies, for the scoring and decision tests."""

from __future__ import annotations

from stream_apps.core.features import Features
from stream_apps.core.scoring import LONG
from stream_apps.core.strategy import default_strategy_dir, load_strategies

CONFIGS = {c.name: c for c in load_strategies(default_strategy_dir())}
V51, V52, V53 = CONFIGS["v51_baseline"], CONFIGS["v52_8signals"], CONFIGS["v53"]
FAST, MID = 1_800_000, 14_400_000
T = 1_700_006_400_000


def feats(direction=LONG, **overrides) -> Features:
    """A BTC snapshot where everything favours ``direction`` unless overridden."""
    s = 1 if direction == LONG else -1
    values = dict(
        exchange="binance",
        symbol="BTCUSDT",
        time_ms=T,
        last_price=30_000.0,
        last_trade_ms=T - 10,
        coverage_start_ms=T - 90_000_000,
        cvd=((FAST, 100.0 * s), (MID, 400.0 * s)),
        cvd_slope=((FAST, 5.0 * s),),
        cvd_accel=((FAST, 2.0 * s),),
        vwap_30m=30_000.0 - 10 * s,
        volume_30m=1000.0,
        atr=150.0,  # ATR/price 0.5 %
        atr_percentile=60.0,
        atr_bars=300,
        p95_qty=5.0,
        p99_qty=10.0,
        qty_samples=100_000,
        large_buy_qty_15m=30.0 if s > 0 else 0.0,
        large_sell_qty_15m=0.0 if s > 0 else 30.0,
        whale_buy_usd_15m=0.0,
        whale_sell_usd_15m=0.0,
        whale_ratio_15m=0.3 * s,
        obi=0.1 * s,
        funding_rate=0.0,
        open_interest=1e9,
        oi_change=0.04,
        long_short_ratio=0.4 if s > 0 else 2.5,
        top_trader_long_share=0.6 if s > 0 else 0.4,
        coinbase_premium=0.001 * s,
        spot_perp_divergence=0.0,
    )
    values.update(overrides)
    return Features(**values)
