"""Paper trades made by the real executor for the autopsy tests (no tests in this module).

``paper_trade`` drives ``tests.support.execution.Harness`` (executor + paper broker) through a signal
and a price path; what it emitted (orders, fills, positions) and what it was fed (trades, marks) are
the planted rows an autopsy reads back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from execution.config import ExecutorConfig
from execution.domain import MarkTick
from review.autopsy import TradeFacts
from review.counterfactual import PricePath
from review.tca import Fill, OrderSent
from tests.support.execution import EXCHANGE, SYMBOL, T0, Harness, signal_record, trade_record

S = 1000
H8 = 8 * 3600 * 1000
FUNDING_T = (T0 // H8 + 1) * H8


def mark_record(t: int, *, mark: float, rate: float, next_funding: int = FUNDING_T) -> dict[str, Any]:
    return {
        "exchange": EXCHANGE,
        "symbol": SYMBOL,
        "mark_price": mark,
        "index_price": mark,
        "funding_rate": rate,
        "next_funding_time": next_funding,
        "event_time": t,
        "receive_time": t,
    }


@dataclass
class Planted:
    harness: Harness
    signal: dict[str, Any]
    trades: list[dict[str, Any]] = field(default_factory=list)
    marks: list[dict[str, Any]] = field(default_factory=list)
    books: list[dict[str, Any]] = field(default_factory=list)

    def of(self, topic: str) -> list[dict[str, Any]]:
        return self.harness.of(topic)

    def closed(self) -> dict[str, Any]:
        return self.harness.closed()


def paper_trade(
    steps: list[Any],
    *,
    before: list[Any] = (),  # type: ignore[assignment]
    config: ExecutorConfig | None = None,
    eval_time: int = T0,
    **signal_kw: Any,
) -> Planted:
    """`before` steps, a signal at `eval_time`, then `steps`: ("trade", price, t), ("mark", price, rate,
    t) with the funding time FUNDING_T, ("book", bid, ask, t)."""
    h = Harness(config, now=eval_time)
    sig = signal_record(eval_time=eval_time, **signal_kw)
    planted = Planted(h, sig)
    for step in before:
        _step(planted, step)
    assert h.signal_rec(sig).allowed
    for step in steps:
        _step(planted, step)
    return planted


def _step(planted: Planted, step: Any) -> None:
    h, kind = planted.harness, step[0]
    if kind == "trade":
        _, price, t = step
        rec = trade_record(float(price), int(t))
        planted.trades.append(rec)
        h.now = max(h.now, int(t))
        h.ex.on_trade(rec, h.now)
    elif kind == "mark":
        _, price, rate, t = step
        rec = mark_record(int(t), mark=float(price), rate=float(rate))
        planted.marks.append(rec)
        h.ex.on_mark(rec, int(t))
    else:
        _, bid, ask, t = step
        h.book(float(bid), float(ask), int(t))


def facts_of(p: Planted, population=()) -> TradeFacts:
    """The TradeFacts of a planted trade, built from the records as the database would return them."""
    closed_ev = p.closed()
    pid = closed_ev["position_id"]
    opened = next(e for e in p.of("positions") if e["position_id"] == pid and e["event"] == "opened")
    tp1 = next((e for e in p.of("positions") if e["position_id"] == pid and e["event"] == "tp1"), None)
    closed = dict(
        closed_ev,
        entry_time=opened["event_time"],
        exit_time=closed_ev["event_time"],
        qty=opened["qty"],
        pnl_r_gross=closed_ev["pnl_r_gross"],
        pnl_r_net=closed_ev["pnl_r_net"],
        tp1_hit=tp1 is not None,
        score=p.signal["score"],
    )
    trades = [t for t in p.trades if t["trade_time"] >= opened["event_time"]]
    path = PricePath(
        np.array([t["agg_id"] for t in trades], dtype=np.int64),
        np.array([t["price"] for t in trades], dtype=np.float64),
        np.array([t["trade_time"] for t in trades], dtype=np.int64),
    )
    marks = [MarkTick.from_record(m) for m in p.marks]
    sent = [o for o in p.of("orders") if o["state"] == "PENDING_NEW" and o["position_id"] == pid]
    orders = [
        OrderSent(o["client_order_id"], o["leg"], o["side"], o["event_time"], o["mid_at_send"], o["mid_source"])
        for o in sent
    ]
    mine = {o.client_order_id for o in orders}
    fill_recs = [f for f in p.of("fills") if f["client_order_id"] in mine]
    fills = [
        Fill(f["client_order_id"], f["price"], f["qty"], f["fee"], f["liquidity"], f["event_time"]) for f in fill_recs
    ]
    return TradeFacts(
        closed=closed,
        opened=opened,
        tp1=tp1,
        path=path,
        marks=marks,
        orders=orders,
        fills=fills,
        population=list(population),
        factors=p.signal["factors"],
        fill_trade_ids={f["client_order_id"]: f["trade_id"] for f in fill_recs},
    )
