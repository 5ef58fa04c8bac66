"""Parameters and counters of a symbol's state.

Why separate: ``SymbolState`` and ``MarketRecords`` both read them, and they are data (part of the
plain-data state), not behaviour. Indicator parameters are per symbol, not per strategy: every
strategy sees the same windows; strategies differ in how they score them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SECOND_MS = 1_000
MINUTE_MS = 60_000


@dataclass(frozen=True)
class StateParams:
    """Indicator parameters of one symbol (not strategy parameters: every strategy sees the same)."""

    p95_floor: float = 50.0
    p99_floor: float = 100.0
    min_quantile_samples: int = 100
    qty_window_hours: int = 24
    whale_usd: float = 100_000.0
    whale_window_ms: int = 900_000
    large_window_ms: int = 900_000
    vwap_window_ms: int = 1_800_000
    liq_window_ms: int = 300_000
    slope_step_ms: int = 15_000
    second_buckets: int = 3_720  # 1 h window + two slope steps + margin
    minute_buckets: int = 1_442  # 24 h + the current minute + margin
    liq_buckets: int = 600  # 10 min of seconds: accepts liquidations up to 5 min late
    atr_bar_ms: int = 300_000
    atr_period: int = 14
    atr_history: int = 288
    atr_min_history: int = 10
    book_max_age_ms: int = 10_000
    mark_max_age_ms: int = 60_000
    indicator_max_age_ms: int = 900_000
    oi_change_max_span_ms: int = 900_000
    # extra buckets in the second/minute/liquidation rings so the engine can evaluate longer segments
    # at once (a replay sets about an hour); changes no number: windows are read the same way
    replay_margin_s: int = 0

    @classmethod
    def for_symbol(cls, symbol: str, **overrides: Any) -> StateParams:
        """DESIGN §4 floors: BTC P95/P99 at least 5/10, every other symbol 50/100 (base units)."""
        floors = {"p95_floor": 5.0, "p99_floor": 10.0} if symbol.upper().startswith("BTC") else {}
        return cls(**{**floors, **overrides})

    @classmethod
    def for_replay(cls, symbol: str, **overrides: Any) -> StateParams:
        """``for_symbol`` with rings an hour longer: a replay engine evaluates up to an hour of
        evaluation times per segment (see ``Engine``); the numbers are those of ``for_symbol``."""
        return cls.for_symbol(symbol, **{"replay_margin_s": 3_600, **overrides})

    @property
    def ring_sizes(self) -> tuple[int, int, int]:
        """Allocated (second, minute, liquidation) buckets."""
        margin = self.replay_margin_s
        return self.second_buckets + margin, self.minute_buckets + -(-margin // 60), self.liq_buckets + margin

    @property
    def second_window_limit_ms(self) -> int:
        """Longest CVD window answered from second buckets (with slope and acceleration)."""
        return (self.second_buckets - 2) * SECOND_MS - 2 * self.slope_step_ms

    @property
    def minute_window_limit_ms(self) -> int:
        return (self.minute_buckets - 2) * MINUTE_MS


@dataclass
class Counters:
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    late: int = 0
    gaps: int = 0
    liquidations_dropped: int = 0
    stale_records: int = 0
