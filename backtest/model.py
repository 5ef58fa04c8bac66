"""The backtest's result model: what a run produced, independent of how it was computed or rendered.

Why a module of its own: the runner (which drives the engine core and the executor's own position
manager, paper fills and pnl code over history) and the report (metrics, JSON/Markdown/PNG/HTML, the
`backtest_runs`/`backtest_trades` rows) meet only here, so either can change without the other.
Times are Unix milliseconds UTC; R values are floats; USDT values are floats (the database stores
them as numeric).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class StrategyInfo:
    name: str
    version: str
    config_hash: str
    config: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class BacktestTrade:
    """One closed position, with its costs as separate columns (gross - fees - slippage - funding = net)."""

    position_id: str
    signal_id: str
    strategy: str
    strategy_version: str
    config_hash: str
    exchange: str
    symbol: str
    direction: str  # LONG | SHORT
    tier: str  # standard | heavy
    score: float
    entry_time: int
    exit_time: int
    entry_price: float
    exit_price: float
    sl_price: float
    tp1_price: float
    tp2_price: float
    risk_distance: float
    exit_reason: str  # sl | sl_be | tp | timeout | signal_flip | ...
    tp1_hit: bool
    r_usd: float  # value of 1R in USDT for this position
    pnl_r_gross: float
    fees_r: float
    slippage_r: float
    funding_r: float  # > 0 = paid by the position
    pnl_r_net: float

    @property
    def pnl_usd_net(self) -> float:
        return self.pnl_r_net * self.r_usd

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["pnl_usd_net"] = self.pnl_usd_net
        return d


@dataclass(frozen=True, slots=True)
class CoverageRow:
    """Share of evaluations of one (layer, symbol) whose inputs were present; the rest are counted."""

    layer: str
    symbol: str
    input: str
    evaluations: int
    present: int
    note: str = ""  # e.g. "no public history (Coinbase premium)"

    @property
    def share(self) -> float:
        return self.present / self.evaluations if self.evaluations else 0.0


@dataclass(slots=True)
class RunResult:
    """Everything one backtest run produced; `partial` when it was interrupted (Ctrl-C)."""

    run_id: str
    source: str
    exchange: str
    symbols: list[str]
    from_ms: int
    to_ms: int
    strategies: list[StrategyInfo]
    trades: list[BacktestTrade]
    initial_balance: float
    started_at_ms: int
    finished_at_ms: int
    partial: bool = False
    events_processed: int = 0  # market records read (trades + other inputs)
    trades_processed: int = 0  # market trades read
    evaluations: int = 0
    signals: int = 0
    coverage: list[CoverageRow] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # missing days/files, human-readable
    bad_rows: list[str] = field(default_factory=list)  # "file:line: reason"
    params: dict[str, Any] = field(default_factory=dict)  # execution model parameters (fees, slippage, ...)
    processed_to_ms: int | None = None  # event time the run reached (a partial run stops before to_ms)
    # the routed entry orders and their fills, as columns and rows (backtest.routed_orders); {}: none
    routed_orders: dict[str, Any] = field(default_factory=dict)

    @property
    def end_ms(self) -> int:
        """End of the time the results cover: where an interrupted run stopped, else the range's end."""
        return min(self.processed_to_ms, self.to_ms) if self.processed_to_ms is not None else self.to_ms
