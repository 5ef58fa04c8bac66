"""Counterfactual exits: a closed trade replayed over its stored price path with its take-profit, stop or
size moved, through the executor's own code.

What runs is not a copy of the exit rules: each scenario restores the position from its ``opened``
event into a fresh paper ``execution.executor.Executor`` with an ``execution.paper_broker.PaperBroker``
(``Executor.restore``, as after a restart) and feeds it the stored trades and mark prices. So the
exit state machine (``execution.position_manager.Position``: TP1 half, stop to break-even, TP2,
timeout), the exit orders (market, not before the trigger trade), the paper fills (next trade,
``slippage_bps`` against us, taker fee), funding at every settlement and the P&L in R are the ones
paper trading and the backtest use. The entry is kept as it happened (its price, fees and slippage
from the ``opened`` event); only what follows it is replayed.

Scenarios (each knob alone, the others as traded):
- ``tp``: both take-profit distances from the entry scaled (TP1 and TP2 x k);
- ``sl``: the stop distance scaled (1R stays the trade's R, so a stop-out at x k costs k R);
- ``size``: quantity and 1R in quote scaled (fees scale with it).
Scale 1 of any knob is the trade as traded: on a paper trade it reproduces the actual exit, reason and
P&L (the tests hold it to that); on a live trade the difference from the actual is the paper model's
error, reported as such, and every delta is taken against the replay at scale 1, not the actual. The
replay fills exits by the tape rules (the path's books are not read): a paper trade filled against the
book (``paper.fills: book``, the default) may differ at scale 1 by what its exits walked, reported the
same way.

Results are normalised to the actual trade: ``net_r`` is the scenario's cash P&L / the actual 1R in
quote, ``roi_pct`` its cash P&L / its entry notional x 100.

Feeding: trades a position cannot act on (inside ``Executor.quiet_trades``: no level crossed, before
its timeout and the next funding time, no order in flight) are skipped in bulk with numpy, as the
backtest runner skips them; marks are passed filtered to those that decide a settlement (the last
before each funding time, which fixes its rate and mark price, and the first at or after it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np

from execution.broker import Broker
from execution.config import ExecutorConfig, Fees, PaperFills
from execution.domain import MarkTick, TradeTick
from execution.executor import Executor, ListSink
from execution.paper_broker import PaperBroker
from execution.position_manager import Position
from schemas.catalogue import market_key

SCALES = (0.5, 0.75, 1.25, 1.5)
KNOBS = ("tp", "sl", "size")
_CHUNK = 4096


@dataclass(frozen=True, slots=True)
class PricePath:
    """The stored trades from the entry on, in trade order (numpy arrays of equal length)."""

    agg_ids: np.ndarray  # int64
    prices: np.ndarray  # float64
    times: np.ndarray  # int64, epoch ms

    def __len__(self) -> int:
        return len(self.prices)


@dataclass(frozen=True, slots=True)
class ReplayModel:
    """How the replay fills exits: the paper broker's fees and fixed slippage, the break-even offset
    the stop moves to after TP1, and where each number came from."""

    taker_fee: float
    maker_fee: float
    slippage_bps: float
    breakeven_offset_r: float = 0.0
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Outcome:
    exit_reason: str  # as the executor names it; "open_at_data_end" when the path ended first
    exit_time: int | None
    exit_price: float | None
    tp1_hit: bool
    gross_r: float
    fees_r: float
    slippage_r: float
    funding_r: float
    net_r: float  # cash P&L / the actual trade's 1R in quote
    roi_pct: float  # cash P&L / entry notional x 100


@dataclass(frozen=True, slots=True)
class Scenario:
    knob: str  # tp | sl | size
    scale: float
    outcome: Outcome
    delta_net_r: float  # against the replay at scale 1
    delta_roi_pct: float


@dataclass(slots=True)
class Counterfactuals:
    baseline: Outcome  # the replay at scale 1
    scenarios: list[Scenario] = field(default_factory=list)

    def best(self) -> Scenario | None:
        """The take-profit or stop change that did best (size only scales the result, so it is left out)."""
        exits = [s for s in self.scenarios if s.knob != "size"]
        return max(exits, key=lambda s: (s.delta_net_r, -abs(s.scale - 1)), default=None)


def scaled_opened(opened: Mapping[str, Any], knob: str | None, scale: float) -> dict[str, Any]:
    """The ``opened`` event of the position with one knob scaled (None: as traded)."""
    rec = dict(opened)
    entry = float(opened["entry_price"])
    if knob == "tp":
        rec["tp1_price"] = entry + scale * (float(opened["tp1_price"]) - entry)
        rec["tp2_price"] = entry + scale * (float(opened["tp2_price"]) - entry)
    elif knob == "sl":
        rec["sl_price"] = entry + scale * (float(opened["sl_price"]) - entry)
    elif knob == "size":
        rec["qty"] = float(opened["qty"]) * scale
        rec["r_usd"] = float(opened["r_usd"]) * scale
    elif knob is not None:
        raise ValueError(f"unknown knob {knob!r}; expected one of {KNOBS}")
    rec["mode"] = "paper"
    return rec


def watched_levels(
    opened: Mapping[str, Any], breakeven_offset_r: float, scales: Sequence[float] = SCALES
) -> list[float]:
    """Every price a scenario's position compares trades with (stop, TP1, TP2, the break-even stop after
    TP1), over every knob and scale: between two of them a run of trades cannot change any scenario."""
    out = set()
    for knob, scale in [(None, 1.0)] + [(k, s) for k in KNOBS for s in scales]:
        rec = scaled_opened(opened, knob, scale)
        entry = float(rec["entry_price"])
        risk = float(rec["r_usd"]) / float(rec["qty"])
        sign = 1 if rec["direction"] == "LONG" else -1
        out |= {
            float(rec["sl_price"]),
            float(rec["tp1_price"]),
            float(rec["tp2_price"]),
            entry + sign * breakeven_offset_r * risk,
        }
    return sorted(out)


def settlement_marks(marks: Sequence[MarkTick]) -> list[MarkTick]:
    """Of the marks in time order, those that decide funding (module docstring): for each announced
    funding time the last mark before it and the first at or after it."""
    keep: list[MarkTick] = []
    for i, m in enumerate(marks):
        nxt = marks[i + 1] if i + 1 < len(marks) else None
        last_before = (
            nxt is None or nxt.next_funding_time != m.next_funding_time or nxt.event_time >= m.next_funding_time
        )
        first_after = i > 0 and marks[i - 1].event_time < marks[i - 1].next_funding_time <= m.event_time
        if last_before or first_after or i == 0:
            keep.append(m)
    return keep


def _first_outside(path: PricePath, start: int, low: float, high: float, until: float) -> int:
    """The first index from `start` whose trade leaves the quiet band; len(path) when none does."""
    n = len(path)
    i, step = start, _CHUNK
    while i < n:
        j = min(n, i + step)
        p, t = path.prices[i:j], path.times[i:j]
        hit = np.flatnonzero((p <= low) | (p >= high) | (t >= until))
        if hit.size:
            return i + int(hit[0])
        i, step = j, step * 2
    return n


def _drive(ex: Executor, pos: Position, path: PricePath, marks: Sequence[MarkTick]) -> None:
    key = market_key(pos.exchange, pos.symbol)
    n, i, j = len(path), 0, 0
    while not pos.closed and i < n:
        band = ex.quiet_trades(key)
        k = i if band is None else _first_outside(path, i, *band)
        limit = int(path.times[k]) if k < n else math.inf
        if j < len(marks) and marks[j].event_time <= limit:
            mark = marks[j]
            j += 1
            # the trades skipped up to the mark were quiet; a mark goes before trades of its millisecond
            i = max(i, int(np.searchsorted(path.times, mark.event_time, side="left")))
            ex.on_mark_tick(mark, mark.event_time)
            continue
        if k >= n:
            break
        t = int(path.times[k])
        ex.on_trade_tick(
            TradeTick(pos.exchange, pos.symbol, int(path.agg_ids[k]), float(path.prices[k]), 0.0, t, "BUY"), t
        )
        i = k + 1


def replay(
    opened: Mapping[str, Any],
    path: PricePath,
    marks: Sequence[MarkTick],
    model: ReplayModel,
    *,
    actual_r_usd: float,
    knob: str | None = None,
    scale: float = 1.0,
) -> Outcome:
    """One scenario: the position from `opened` (one knob scaled) run over `path` and `marks`."""
    rec = scaled_opened(opened, knob, scale)
    config = ExecutorConfig(
        fees=Fees(taker=model.taker_fee, maker=model.maker_fee),
        # tape fills: the replay feeds the path's trades and marks, not its books. A trade filled against
        # the book (the paper default) may then differ at x1, and the report says so, as for a live trade
        paper=PaperFills(slippage_bps=model.slippage_bps, fills="tape"),
        breakeven_offset_r=model.breakeven_offset_r,
    )
    start = int(rec["event_time"])
    # PaperBroker implements Broker; its ``mode`` attribute is typed as a plain str
    broker = cast(Broker, PaperBroker(config.fees, config.paper))
    ex = Executor(config, "paper", broker, ListSink(), start)
    ex.restore([rec], [], [], start)
    pos = ex.positions[rec["position_id"]]
    _drive(ex, pos, path, marks)
    notional = pos.qty_initial * pos.entry
    if pos.result is None:
        return Outcome(
            "open_at_data_end",
            None,
            None,
            pos.tp1_done,
            math.nan,
            pos.fees_r,
            pos.slippage_r,
            pos.funding_r,
            math.nan,
            math.nan,
        )
    cash = pos.result.net_r * pos.r_usd
    return Outcome(
        pos.exit_reason or "",
        pos.last_event_time,
        pos.exit_price,
        pos.tp1_done,
        pos.result.gross_r * pos.r_usd / actual_r_usd,
        pos.result.fees_r * pos.r_usd / actual_r_usd,
        pos.result.slippage_r * pos.r_usd / actual_r_usd,
        pos.result.funding_r * pos.r_usd / actual_r_usd,
        cash / actual_r_usd,
        100.0 * cash / notional,
    )


def counterfactuals(
    opened: Mapping[str, Any],
    path: PricePath,
    marks: Sequence[MarkTick],
    model: ReplayModel,
    scales: Sequence[float] = SCALES,
) -> Counterfactuals:
    """The replay at scale 1 and every knob at every scale, each with its delta against scale 1."""
    r_usd = float(opened["r_usd"])
    marks = settlement_marks(marks)
    base = replay(opened, path, marks, model, actual_r_usd=r_usd)
    out = Counterfactuals(base)
    for knob in KNOBS:
        for scale in scales:
            o = replay(opened, path, marks, model, actual_r_usd=r_usd, knob=knob, scale=scale)
            out.scenarios.append(Scenario(knob, scale, o, o.net_r - base.net_r, o.roi_pct - base.roi_pct))
    return out
