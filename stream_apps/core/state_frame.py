"""The features frame of a symbol state: every feature at many evaluation times, as columns.

Why a module of its own: reading is pure and gathers from every part of the state (the flow
windows, the size thresholds, the last trade and ATR, the market records, the detectors), each of
which answers for its own columns; this module only puts them in a ``FeatureFrame``. With a
segment's log each time sees only what came before it (see ``SymbolState.snapshot_frame``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

from .flow_windows import checked_windows
from .frame import SCALAR_FIELDS, FeatureFrame
from .market_records import MarketTimeline
from .segment_log import SegmentLog

if TYPE_CHECKING:
    from .symbol_state import SymbolState


def state_frame(
    state: SymbolState,
    times: np.ndarray,
    cvd_windows_ms: Iterable[int],
    slope_windows_ms: Iterable[int],
    log: SegmentLog | None,
    timeline: MarketTimeline | None,
) -> FeatureFrame:
    """Features at every one of ``times`` (sorted), as columns (pure read).

    Without ``log`` the state as it is answers every time (``snapshot``). With the log of
    ``apply_segment`` (and ``advance_segment``, and the ``MarketTimeline`` of the segment's other
    inputs) each time sees only the trades and inputs before it: window
    sums are read from buckets that end before the time, and everything else comes from the logs.
    """
    times = np.asarray(times, dtype=np.int64)
    windows, slope_windows = checked_windows(state.params, cvd_windows_ms, slope_windows_ms)
    flow = state.windows.columns(times, windows, slope_windows)
    values = _trade_columns(state, times, log)
    values["vwap_30m"] = flow.vwap
    values["volume_30m"] = flow.volume
    values["p95_qty"], values["p99_qty"], values["qty_samples"] = state.sizes.columns(times, log).T.copy()
    values["large_buy_qty_15m"] = flow.large_buy_qty
    values["large_sell_qty_15m"] = flow.large_sell_qty
    values["whale_buy_usd_15m"], values["whale_sell_usd_15m"] = flow.whale_buy_usd, flow.whale_sell_usd
    values["whale_ratio_15m"] = flow.whale_ratio
    values.update(state.market.values_many(times, timeline))
    values.update(state.detector_set.columns(times, log, timeline))
    return FeatureFrame(
        state.exchange,
        state.symbol,
        times,
        {name: values[name] for name in SCALAR_FIELDS},
        flow.cvd,
        flow.slopes,
        flow.accels,
    )


def _trade_columns(state: SymbolState, times: np.ndarray, log: SegmentLog | None) -> dict[str, np.ndarray]:
    """Last trade, coverage and ATR at each of ``times``: from the segment's log, else the state."""
    n = len(times)
    if log is not None:
        last_price, last_trade = log.last_trades_at(times)
        atr_value, atr_pct, atr_bars = log.atr_at(times)
    else:
        last_price = np.full(n, np.nan if state.last_price is None else state.last_price, dtype=np.float64)
        last_trade = np.full(n, np.nan if state.last_trade_ms is None else float(state.last_trade_ms))
        atr_value = np.full(n, np.nan if state.atr.value is None else state.atr.value, dtype=np.float64)
        atr_pct = np.full(n, state.atr.percentile(), dtype=np.float64)
        atr_bars = np.full(n, float(state.atr.bars))
    coverage = np.nan if state.coverage_start_ms is None else float(state.coverage_start_ms)
    approx = np.nan if state.approx_until_ms is None else float(state.approx_until_ms)
    return {
        "last_price": last_price,
        "last_trade_ms": last_trade,
        "coverage_start_ms": np.full(n, coverage),
        "approx_until_ms": np.full(n, approx),
        "atr": atr_value,
        "atr_percentile": atr_pct,
        "atr_bars": atr_bars,
    }
