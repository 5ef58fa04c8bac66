"""The trade autopsy: why one closed trade made or lost what it did.

``build_autopsy(facts)`` puts together, from the rows of one trade (``TradeFacts``, gathered by
``review.autopsy_db``):
- the money in R as the executor booked it (gross, fees, slippage, funding, net) and the ROI
  (net cash / entry notional);
- TCA (``review.tca``): each order's fills against the mid at send, maker share, cost share;
- peers (``review.peers``): its percentile in its strategy x direction x regime x size group;
- counterfactuals (``review.counterfactual``): TP, stop and size x 0.5 / 0.75 / 1.25 / 1.5 replayed
  through the executor's own exit and paper-fill code, with the replay at x1 checked against the
  actual exit;
- the confidence model's part, when the revision that made the signal names a model: its p and its
  largest SHAP contributions (``confidence_model``, computed by the caller's explainer: the model code
  lives above this layer);
- the narrative (``review.narrative``).

The replay's fill model (``infer_model``) comes from the trade's own fills where they tell it: the
taker and maker fee rates paid, and, for a paper trade, the slippage of its market fills against the
trades they filled at (paper trade ids name them); the executor's defaults otherwise, said in the
model's notes. Pure: no database, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from execution.config import ExecutorConfig
from execution.domain import MarkTick, direction_sign
from review import narrative
from review.counterfactual import Counterfactuals, PricePath, ReplayModel, counterfactuals
from review.peers import PeerStats, PeerTrade, peers, regime_of
from review.tca import Fill, OrderSent, Tca, tca

MATCH_TOLERANCE_R = 1e-9  # the replay at x1 of a paper trade equals the actual within float rounding


@dataclass(slots=True)
class TradeFacts:
    """Everything the autopsy reads about one closed trade."""

    closed: Mapping[str, Any]  # trades_closed row (+ score, regime inputs): the trade as booked
    opened: Mapping[str, Any]  # the position's opened event (what the replay restores)
    tp1: Mapping[str, Any] | None
    path: PricePath
    marks: Sequence[MarkTick]
    orders: Sequence[OrderSent] = ()
    fills: Sequence[Fill] = ()
    population: Sequence[PeerTrade] = ()
    factors: Mapping[str, Any] | None = None  # the signal's factors
    layers: Mapping[str, Any] | None = None  # the evaluation's layer scores
    gate: str | None = None
    run_id: str = ""
    fill_trade_ids: Mapping[str, str] = field(default_factory=dict)  # client order id -> a fill's trade id
    confidence_model: Mapping[str, Any] | None = None  # p and top SHAP contributions of the model, if one ran


@dataclass(slots=True)
class Autopsy:
    trade: dict[str, Any]
    costs: dict[str, float]
    tca: Tca
    peers: PeerStats
    model: ReplayModel
    counterfactuals: Counterfactuals
    replay_matches: bool
    layers: Mapping[str, Any] | None
    gate: str | None
    narrative: list[str] = field(default_factory=list)
    confidence_model: Mapping[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        cf = self.counterfactuals
        best = cf.best()
        return {
            "trade": self.trade,
            "costs": self.costs,
            "tca": self.tca.as_dict(),
            "peers": self.peers.as_dict(),
            "model": {
                "taker_fee": self.model.taker_fee,
                "maker_fee": self.model.maker_fee,
                "slippage_bps": self.model.slippage_bps,
                "breakeven_offset_r": self.model.breakeven_offset_r,
                "notes": list(self.model.notes),
            },
            "counterfactuals": {
                "baseline": _outcome(cf.baseline),
                "replay_matches_actual": self.replay_matches,
                "scenarios": [
                    {"knob": s.knob, "scale": s.scale, "delta_net_r": s.delta_net_r, "delta_roi_pct": s.delta_roi_pct}
                    | _outcome(s.outcome)
                    for s in cf.scenarios
                ],
                "best": None
                if best is None
                else {
                    "knob": best.knob,
                    "scale": best.scale,
                    "net_r": best.outcome.net_r,
                    "delta_net_r": best.delta_net_r,
                },
            },
            "layers": dict(self.layers) if self.layers else None,
            "gate": self.gate,
            "confidence_model": dict(self.confidence_model) if self.confidence_model else None,
            "narrative": self.narrative,
        }


def _outcome(o: Any) -> dict[str, Any]:
    return {
        "exit_reason": o.exit_reason,
        "exit_time": o.exit_time,
        "exit_price": o.exit_price,
        "tp1_hit": o.tp1_hit,
        "gross_r": o.gross_r,
        "fees_r": o.fees_r,
        "slippage_r": o.slippage_r,
        "funding_r": o.funding_r,
        "net_r": o.net_r,
        "roi_pct": o.roi_pct,
    }


def roi_pct(net_r: float, r_usd: float, qty: float, entry_price: float) -> float:
    """Net cash P&L over the entry notional, in percent."""
    return 100.0 * net_r * r_usd / (qty * entry_price)


def _fee_rate(fills: Sequence[Fill], liquidity: str) -> float | None:
    own = [f for f in fills if f.liquidity == liquidity]
    notional = sum(f.qty * f.price for f in own)
    return sum(f.fee for f in own) / notional if notional else None


def _paper_slippage_bps(facts: TradeFacts) -> float | None:
    """Mean bp of the trade's paper market fills against the trades that filled them (``p:<agg_id>:``)."""
    sides = {o.client_order_id: o.side for o in facts.orders}
    ids = facts.path.agg_ids
    seen = []
    for f in facts.fills:
        tid = facts.fill_trade_ids.get(f.client_order_id, "")
        if f.liquidity != "taker" or not tid.startswith("p:") or f.client_order_id not in sides:
            continue
        agg = int(tid.split(":")[1])
        i = int(np.searchsorted(ids, agg))
        if i < len(ids) and ids[i] == agg:
            trade_price = float(facts.path.prices[i])
            seen.append((1 if sides[f.client_order_id] == "BUY" else -1) * (f.price - trade_price) / trade_price * 1e4)
    return sum(seen) / len(seen) if seen else None


def breakeven_offset(opened: Mapping[str, Any], tp1: Mapping[str, Any] | None, default: float) -> float:
    """The R the stop moved to after TP1: read from the tp1 event when there was one, else the default."""
    if tp1 is None:
        return default
    risk = float(opened["r_usd"]) / float(opened["qty"])
    be = direction_sign(opened["direction"]) * (float(tp1["sl_price"]) - float(opened["entry_price"])) / risk
    return min(max(be, 0.0), 0.999)


def infer_model(facts: TradeFacts, defaults: ExecutorConfig | None = None) -> ReplayModel:
    """The replay's fill model from the trade's own fills, the executor's defaults for what they lack."""
    d = defaults or ExecutorConfig()
    notes = []
    taker, maker = _fee_rate(facts.fills, "taker"), _fee_rate(facts.fills, "maker")
    if taker is None:
        taker = d.fees.taker
        notes.append(f"taker fee {taker * 1e4:g} bp: the configured one (no taker fill to measure)")
    if maker is None:
        maker = d.fees.maker
    slip = _paper_slippage_bps(facts)
    if slip is None:
        slip = d.paper.slippage_bps
        notes.append(f"slippage {slip:g} bp: the configured paper slippage (no paper market fill to measure)")
    slip = max(0.0, slip)
    be = breakeven_offset(facts.opened, facts.tp1, d.breakeven_offset_r)
    if facts.closed["mode"] in ("testnet", "live"):
        notes.append("a live trade replayed with the paper fill model: x1 differs from the actual by the model's error")
    return ReplayModel(taker, maker, slip, be, tuple(notes))


def _costs(closed: Mapping[str, Any]) -> dict[str, float]:
    gross = float(closed["pnl_r_gross"])
    fees, slip = float(closed["fees_r"]), float(closed["slippage_r"])
    funding = float(closed.get("funding_r") or 0.0)
    return {
        "gross_r": gross,
        "fees_r": fees,
        "slippage_r": slip,
        "funding_r": funding,
        "net_r": float(closed["pnl_r_net"]),
        "gross_usd": gross * float(closed["r_usd"]),
        "costs_usd": (fees + slip + funding) * float(closed["r_usd"]),
    }


def peer_trade(closed: Mapping[str, Any], factors: Mapping[str, Any] | None, run_id: str = "") -> PeerTrade:
    """The trade as its peers see it (``closed`` needs qty of the opened event as ``qty``)."""
    return PeerTrade(
        f"{run_id}/{closed['position_id']}" if run_id else str(closed["position_id"]),
        str(closed["strategy"]),
        str(closed["direction"]),
        regime_of(factors),
        float(closed["r_usd"]),
        float(closed["pnl_r_net"]),
        roi_pct(float(closed["pnl_r_net"]), float(closed["r_usd"]), float(closed["qty"]), float(closed["entry_price"])),
        int(closed["exit_time"]) - int(closed["entry_time"]),
    )


def _matches(closed: Mapping[str, Any], cf: Counterfactuals) -> bool:
    b = cf.baseline
    return (
        b.exit_reason == closed["exit_reason"]
        and b.exit_time == int(closed["exit_time"])
        and abs(b.net_r - float(closed["pnl_r_net"])) <= MATCH_TOLERANCE_R
    )


def build_autopsy(facts: TradeFacts, defaults: ExecutorConfig | None = None) -> Autopsy:
    closed = facts.closed
    costs = _costs(closed)
    me = peer_trade(closed, facts.factors, facts.run_id)
    trade = {
        "trade_id": me.trade_id,
        "position_id": closed["position_id"],
        "run_id": facts.run_id,
        "mode": closed["mode"],
        "strategy": closed["strategy"],
        "exchange": closed["exchange"],
        "symbol": closed["symbol"],
        "direction": closed["direction"],
        "tier": closed["tier"],
        "score": closed.get("score"),
        "regime": me.regime,
        "entry_time": int(closed["entry_time"]),
        "exit_time": int(closed["exit_time"]),
        "entry_price": float(closed["entry_price"]),
        "exit_price": float(closed["exit_price"]) if closed.get("exit_price") is not None else None,
        "exit_reason": closed["exit_reason"],
        "tp1_hit": bool(closed.get("tp1_hit")),
        "qty": float(closed["qty"]),
        "r_usd": float(closed["r_usd"]),
        "roi_pct": me.roi_pct,
    }
    model = infer_model(facts, defaults)
    cf = counterfactuals(facts.opened, facts.path, facts.marks, model)
    a = Autopsy(
        trade,
        costs,
        tca(facts.orders, facts.fills, gross_r=costs["gross_r"], fees_r=costs["fees_r"], funding_r=costs["funding_r"]),
        peers(me, facts.population),
        model,
        cf,
        _matches(closed, cf),
        facts.layers,
        facts.gate,
        confidence_model=facts.confidence_model,
    )
    a.narrative = narrative.sentences(a.as_dict())
    return a
