"""Consecutive `agg_id`s for OKX trades, with every hole in OKX's own trade ids made visible.

`md.trades` promises an `agg_id` that is unique and consecutive per (exchange, symbol); the engine
treats a jump as a hole and a repeated or older id as a duplicate. OKX's `trades` channel aggregates
the fills of one taker order at one price into a row that names the *last* fill's id and the number
of fills (`count`), so its ids advance by `count` per row: they cannot be `agg_id` themselves. But they
are consecutive per instrument, so unlike Bybit's UUIDs they tell whether anything was missed:

- the row after OKX id N must start at N+1 (`tradeId - count + 1`); then it gets the next `agg_id`;
- a row starting above N+1 (a lost frame, a reconnect: OKX does not replay trades) leaves a hole in
  the `agg_id`s as wide as the OKX ids missing, one id per missing fill, returned with the OKX id
  range: the producer fills it from `GET /api/v5/market/history-trades` (one fill per id, exactly the
  ids left) or, when REST cannot, publishes it on `md.gaps`, so the jump the engine sees is exactly
  the gap that was reported; a reconnect that lost nothing leaves no hole;
- a row whose ids were already numbered (a repeated push) is dropped as a duplicate; ids far below
  the last one (OKX renumbered the instrument) open a new series behind a reported hole.

The first row (and a renumbering) starts a numbering series at `trade_time_ms * 1000`, so a restarted producer
numbers above everything an earlier run published without a checkpoint (as the Bybit numbering does).
Pure state, no clock, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from producers.base.sequencer import Gap
from producers.okx.parse import TradePrint

IDS_PER_MS = 1000  # a series' first id = first trade time (ms) * IDS_PER_MS
RENUMBER_WINDOW = 1_000_000  # OKX ids this far below the last one are a renumbering, not a repeat


@dataclass(frozen=True)
class TradeHole:
    """A hole: tapeflow's `agg_id`s left out and the OKX trade ids (inclusive) they stand for."""

    gap: Gap
    okx_from: int | None
    okx_to: int | None

    def reason(self) -> str:
        if self.okx_from is None:
            return "OKX trade ids went backwards (instrument renumbered): trades around the restart may be missing"
        return (
            f"OKX trade ids {self.okx_from}..{self.okx_to} ({self.okx_to - self.okx_from + 1} fills) never "
            f"arrived: OKX does not replay the trades channel"
        )


@dataclass
class NumberingCounters:
    published: int = 0
    duplicates: int = 0
    series: int = 0  # numbering series opened (the first row, then one per renumbering)
    gaps: int = 0
    okx_ids_missing: int = 0


@dataclass
class OkxTradeNumbering:
    """Per-symbol numbering state (see the module docstring)."""

    symbol: str
    last_id: int | None = None  # last agg_id published
    last_trade_id: int | None = None  # last OKX trade id numbered
    last_trade_time: int | None = None
    counters: NumberingCounters = field(default_factory=NumberingCounters)

    def number(self, trade: TradePrint) -> tuple[dict | None, TradeHole | None]:
        """(the `md.trades` record, or None for a duplicate; the hole this trade opens, if any)."""
        hole = None
        if self.last_id is None or self.last_trade_id is None:
            agg_id = trade.trade_time * IDS_PER_MS
            self.counters.series += 1
        elif trade.trade_id <= self.last_trade_id:
            if self.last_trade_id - trade.trade_id < RENUMBER_WINDOW:
                self.counters.duplicates += 1
                return None, None
            agg_id = max(trade.trade_time * IDS_PER_MS, self.last_id + 2)
            hole = TradeHole(Gap(self.symbol, self.last_id + 1, agg_id - 1), None, None)
            self.counters.series += 1
        elif trade.first_trade_id > self.last_trade_id + 1:
            missing = trade.first_trade_id - self.last_trade_id - 1
            agg_id = self.last_id + 1 + missing
            hole = TradeHole(
                Gap(self.symbol, self.last_id + 1, agg_id - 1), self.last_trade_id + 1, trade.first_trade_id - 1
            )
            self.counters.okx_ids_missing += missing
        else:
            agg_id = self.last_id + 1
        if hole is not None:
            self.counters.gaps += 1
        self.last_id = agg_id
        self.last_trade_id = trade.trade_id
        self.last_trade_time = trade.trade_time
        self.counters.published += 1
        return trade.record(agg_id), hole
