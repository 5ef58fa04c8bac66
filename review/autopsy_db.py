"""The trade autopsy against PostgreSQL: gather one trade's rows, store autopsies, report per strategy.

One trade is a handful of indexed queries: its position events (``positions_pkey`` by mode), its signal
and evaluation (primary keys), its orders (``orders_signal_idx``) and fills (``fills_client_order_idx``),
its mark prices (``mark_prices_pkey``), its strategy's closed trades for the peers
(``positions_strategy_time_idx``), and the stored price path: the trades from the entry to where the
latest scenario can close (the timeout, or the actual exit when later). Of that path only the trades a
scenario can act on are read (``sparse_path``: the 1-minute bars say which minutes touch a watched
level), by primary key, as three packed binary columns (``string_agg`` of ``int8send``/``float8send``/
``timestamptz_send``) that numpy reads without a Python object per trade.

A backtest trade (``run_id`` given: a ``backtest_runs.run_id``, or the run id the backtest printed
when it ran one strategy) has no orders or fills: its opened state is rebuilt from ``backtest_trades``
and the run's execution model (``params.executor``), the TCA is left empty and says so.

``write_autopsies(conn, since_ms, until_ms)`` computes and upserts the autopsy of every position closed
in ``[since_ms, until_ms)`` into ``trade_autopsies`` (idempotent: a trade's row is replaced), for the
hourly job. ``aggregate`` is `tapeflow autopsy --strategy`: gross, fees, slippage and funding by tier,
regime, hour of entry and exit reason.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import psycopg
import structlog
from psycopg.rows import dict_row

from execution.config import ExecutorConfig
from execution.domain import MarkTick
from review.autopsy import Autopsy, TradeFacts, breakeven_offset, build_autopsy, roi_pct
from review.counterfactual import PricePath, watched_levels
from review.peers import PeerTrade, regime_of
from review.tca import Fill, OrderSent
from tapeflow_runtime.errors import TapeflowError

log = structlog.get_logger("autopsy")

MODES = ["paper", "testnet", "live"]
PEER_LIMIT = 5000  # the strategy's most recent closed trades the peers are drawn from
_PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01 in Unix microseconds (timestamptz_send's origin)
_AFTER_MS = 5 * 60_000  # path read past the last possible close, for the fill after a timeout


class AutopsyError(TapeflowError):
    """No such closed trade, or not enough stored to dissect it."""


#: the confidence model's part in a decision, for the narrative: called with the connection and the
#: decision (strategy, config_rev, signal_id, eval_time, inputs, layer_scores, score, direction), it
#: returns the model's p and largest SHAP contributions, or None when no model took part. The model code
#: is above this layer (backtest.research.model_health_explain), so the caller hands it in.
Explainer = Callable[[psycopg.Connection, Mapping[str, Any]], Mapping[str, Any] | None]


def _cur(conn: psycopg.Connection) -> psycopg.Cursor[dict[str, Any]]:
    return conn.cursor(row_factory=dict_row)


def _ms(ts: datetime) -> int:
    return int(ts.timestamp() * 1000) if ts.tzinfo else int(ts.replace(tzinfo=UTC).timestamp() * 1000)


def _ts(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def _num(row: dict[str, Any]) -> dict[str, Any]:
    """numeric columns as floats, times as ms (the records' shapes)."""
    out = {}
    for k, v in row.items():
        if isinstance(v, datetime):
            v = _ms(v)
        elif v is not None and type(v).__name__ == "Decimal":
            v = float(v)
        out[k] = v
    return out


# --------------------------------------------------------------------------------------- loading
def _position_events(conn: psycopg.Connection, position_id: str, mode: str | None) -> dict[str, dict[str, Any]]:
    rows = (
        _cur(conn)
        .execute(
            "SELECT * FROM positions WHERE mode = ANY(%s) AND position_id = %s",
            ([mode] if mode else MODES, position_id),
        )
        .fetchall()
    )
    modes = {r["mode"] for r in rows}
    if len(modes) > 1:
        raise AutopsyError(f"position {position_id} exists in modes {sorted(modes)}: pass --mode")
    events = {r["event"]: _num(r) for r in rows}
    if "closed" not in events or "opened" not in events:
        raise AutopsyError(f"no closed trade with id {position_id!r} (open, unknown, or its opened event is missing)")
    return events


MINUTE = 60_000


def _unpack(packed: Any) -> PricePath:
    """Three packed big-endian columns (agg_id, price, trade time) into a path in agg_id order."""
    ids, prices, times = packed or (None, None, None)
    if ids is None or prices is None or times is None:
        empty = np.empty(0, dtype=np.int64)
        return PricePath(empty, np.empty(0, dtype=np.float64), empty)
    agg = np.frombuffer(ids, dtype=">i8").astype(np.int64)
    order = np.argsort(agg, kind="stable")
    t_ms = (np.frombuffer(times, dtype=">i8").astype(np.int64) + _PG_EPOCH_US) // 1000
    return PricePath(agg[order], np.frombuffer(prices, dtype=">f8").astype(np.float64)[order], t_ms[order])


_SLACK = 1e-9  # relative: a level computed by another float route still counts as inside a bar


def _active(low: float, high: float, levels: np.ndarray) -> bool:
    """Whether a bar's range holds (or touches) one of the watched levels."""
    i = int(np.searchsorted(levels, low * (1 - _SLACK), side="left"))
    return i < len(levels) and levels[i] <= high * (1 + _SLACK)


def sparse_path(
    conn: psycopg.Connection,
    market: tuple[str, str],
    from_ms: int,
    to_ms: int,
    levels: Sequence[float],
    moments: Sequence[int],
) -> PricePath:
    """The trades of [from_ms, to_ms] a replay can act on: the replay over them is the replay over all.

    ``bars_1m`` says which minutes matter: a minute whose low-high range touches a watched level
    (``counterfactual.watched_levels``) or holds one of `moments` (entry, exit, timeout, funding
    times) is read whole, and so is a minute without a bar; of every other minute only its first
    three trades are read. All of that minute's trades lie between the same two levels, so after
    its first trade (which may cross from the minute before), the fill of an exit that trade sent,
    and the fill of a second exit the first fill armed, no scenario can act on the rest."""
    conn.execute("SET LOCAL jit = off")  # compiling the plan costs more than running it
    first = from_ms - from_ms % MINUTE
    bars = (
        _cur(conn)
        .execute(
            "SELECT open_time, low, high, first_agg_id, last_agg_id, trade_count FROM bars_1m"
            " WHERE exchange = %s AND symbol = %s"
            " AND open_time >= %s AND open_time <= %s",
            (*market, _ts(first), _ts(to_ms)),
        )
        .fetchall()
    )
    plan = _MinutePlan()
    by_minute = {_ms(b["open_time"]): b for b in bars}
    marked = {m - m % MINUTE for m in moments}
    watched = np.asarray(sorted(levels), dtype=np.float64)
    for minute in range(first, to_ms + 1, MINUTE):
        bar = by_minute.get(minute)
        if bar is None:
            plan.whole_by_time(minute)
        elif (
            minute in marked
            or _active(bar["low"], bar["high"], watched)
            or bar["last_agg_id"] - bar["first_agg_id"] + 1 != bar["trade_count"]  # ids not consecutive
        ):
            plan.whole_by_id(minute, bar["first_agg_id"], bar["last_agg_id"])
        else:
            plan.head(bar["first_agg_id"], bar["last_agg_id"])
    packed = conn.execute(
        "SELECT string_agg(int8send(agg_id), ''::bytea), string_agg(float8send(price), ''::bytea),"
        " string_agg(timestamptz_send(trade_time), ''::bytea) FROM ("
        # minutes without a bar: by time
        "SELECT t.agg_id, t.price, t.trade_time FROM unnest(%(a)s::timestamptz[], %(b)s::timestamptz[]) AS r(a, b)"
        " JOIN trades t ON t.trade_time >= r.a AND t.trade_time < r.b"
        " WHERE t.exchange = %(e)s AND t.symbol = %(s)s AND t.trade_time >= %(lo)s AND t.trade_time <= %(hi)s"
        # runs of whole minutes with bars: by agg id (the primary key's order)
        " UNION ALL SELECT w.agg_id, w.price, w.trade_time FROM"
        " unnest(%(i0)s::bigint[], %(i1)s::bigint[], %(w0)s::timestamptz[], %(w1)s::timestamptz[]) AS u(i0, i1, w0, w1),"
        " LATERAL (SELECT agg_id, price, trade_time FROM trades WHERE exchange = %(e)s AND symbol = %(s)s"
        "  AND agg_id >= u.i0 AND agg_id <= u.i1 AND trade_time >= u.w0 AND trade_time < u.w1"
        "  AND trade_time >= %(lo)s AND trade_time <= %(hi)s ORDER BY agg_id) AS w"
        # the first three trades of every other minute (its ids are consecutive: the bar says so)
        " UNION ALL SELECT agg_id, price, trade_time FROM trades WHERE exchange = %(e)s AND symbol = %(s)s"
        "  AND agg_id = ANY(%(f)s::bigint[]) AND trade_time >= %(lo)s AND trade_time <= %(hi)s) AS picked",
        {"e": market[0], "s": market[1], "lo": _ts(from_ms), "hi": _ts(to_ms)} | plan.params(),
    ).fetchone()
    return _unpack(packed)


class _MinutePlan:
    """Which trades of each minute ``sparse_path`` reads, merged into runs."""

    def __init__(self) -> None:
        self.spans: list[list[int]] = []  # [start, end) ms: minutes without a bar
        self.runs: list[list[int]] = []  # [first id, last id, start, end): whole minutes with bars
        self.heads: list[int] = []  # ids of the first three trades of the other minutes

    def whole_by_time(self, minute: int) -> None:
        if self.spans and self.spans[-1][1] == minute:
            self.spans[-1][1] = minute + MINUTE
        else:
            self.spans.append([minute, minute + MINUTE])

    def whole_by_id(self, minute: int, first_id: int, last_id: int) -> None:
        if self.runs and self.runs[-1][3] == minute:
            self.runs[-1][1], self.runs[-1][3] = last_id, minute + MINUTE
        else:
            self.runs.append([first_id, last_id, minute, minute + MINUTE])

    def head(self, first_id: int, last_id: int) -> None:
        self.heads.extend(range(first_id, min(first_id + 2, last_id) + 1))

    def params(self) -> dict[str, Any]:
        return {
            "a": [_ts(a) for a, _ in self.spans],
            "b": [_ts(b) for _, b in self.spans],
            "i0": [r[0] for r in self.runs],
            "i1": [r[1] for r in self.runs],
            "w0": [_ts(r[2]) for r in self.runs],
            "w1": [_ts(r[3]) for r in self.runs],
            "f": self.heads,
        }


def _marks(conn: psycopg.Connection, exchange: str, symbol: str, from_ms: int, to_ms: int) -> list[MarkTick]:
    """The newest mark before `from_ms` (it announces the first funding time), and of the marks up to
    `to_ms` the first and the last of each announced funding time: the marks that decide a settlement
    (``counterfactual.settlement_marks``), picked by the server in one ordered scan."""
    rows = conn.execute(
        "(SELECT mark_price, funding_rate, next_funding_time, event_time FROM mark_prices"
        "  WHERE exchange = %(e)s AND symbol = %(s)s AND event_time < %(a)s ORDER BY event_time DESC LIMIT 1)"
        " UNION ALL (SELECT mark_price, funding_rate, next_funding_time, event_time FROM ("
        "  SELECT *, lag(next_funding_time) OVER w AS before, lead(next_funding_time) OVER w AS after"
        "  FROM mark_prices WHERE exchange = %(e)s AND symbol = %(s)s AND event_time >= %(a)s AND event_time <= %(b)s"
        "  WINDOW w AS (ORDER BY event_time)) m"
        "  WHERE before IS DISTINCT FROM next_funding_time OR after IS DISTINCT FROM next_funding_time)"
        " ORDER BY event_time",
        {"e": exchange, "s": symbol, "a": _ts(from_ms), "b": _ts(to_ms)},
    ).fetchall()
    return [MarkTick(exchange, symbol, r[0], r[1], _ms(r[2]), _ms(r[3])) for r in rows]


def _orders_and_fills(
    conn: psycopg.Connection, signal_id: str, position_id: str, mode: str, market: tuple[str, str]
) -> tuple[list[OrderSent], list[Fill], dict[str, str]]:
    rows = (
        _cur(conn)
        .execute(
            "SELECT client_order_id, leg, side, state, event_time, mid_at_send, mid_source, position_id FROM orders"
            " WHERE signal_id = %s AND mode = %s ORDER BY event_time",
            (signal_id, mode),
        )
        .fetchall()
    )
    first: dict[str, dict[str, Any]] = {}
    for r in rows:
        if r["position_id"] not in (None, position_id):
            continue
        seen = first.setdefault(r["client_order_id"], dict(r))
        if seen["mid_at_send"] is None and r["mid_at_send"] is not None:
            seen["mid_at_send"], seen["mid_source"] = r["mid_at_send"], r["mid_source"]
    orders = []
    for cid, r in first.items():
        mid, source = r["mid_at_send"], r["mid_source"]
        if mid is None:  # written before orders carried it: the last stored trade at send
            last = (
                _cur(conn)
                .execute(
                    "SELECT price FROM trades WHERE exchange = %s AND symbol = %s AND trade_time <= %s"
                    " AND trade_time > %s ORDER BY trade_time DESC LIMIT 1",
                    (*market, r["event_time"], _ts(_ms(r["event_time"]) - 3_600_000)),
                )
                .fetchone()
            )
            mid, source = (last["price"], "trades_table") if last else (None, None)
        orders.append(OrderSent(cid, r["leg"], r["side"], _ms(r["event_time"]), mid, source))
    fill_rows = (
        _cur(conn)
        .execute(
            "SELECT client_order_id, trade_id, price, qty, fee, liquidity, event_time FROM fills"
            " WHERE client_order_id = ANY(%s) AND mode = %s",
            (list(first), mode),
        )
        .fetchall()
    )
    fills = [
        Fill(f["client_order_id"], f["price"], f["qty"], float(f["fee"]), f["liquidity"], _ms(f["event_time"]))
        for f in fill_rows
    ]
    return orders, fills, {f["client_order_id"]: f["trade_id"] for f in fill_rows}


_MS = "(extract(epoch FROM {0}) * 1000)::bigint"


def _population(conn: psycopg.Connection, strategy: str, mode: str, run_id: str) -> list[PeerTrade]:
    """The strategy's closed trades as peers: the run's for a backtest trade, else the newest
    ``PEER_LIMIT`` of the mode."""
    if run_id:
        rows = conn.execute(
            "SELECT position_id, direction, r_usd::float8, pnl_r_net::float8, (r_usd / risk_distance)::float8,"  # nosec B608 # constant SQL fragments (_MS, _COLUMNS); values are bound
            f" entry_price, {_MS.format('entry_time')}, {_MS.format('exit_time')}, NULL, NULL"
            " FROM backtest_trades WHERE run_id = %s",
            (run_id,),
        ).fetchall()
    else:
        rows = conn.execute(
            "SELECT c.position_id, c.direction, c.r_usd::float8, c.pnl_r_net::float8, o.qty, c.entry_price,"  # nosec B608 # constant SQL fragments (_MS, _COLUMNS); values are bound
            f" {_MS.format('o.event_time')}, {_MS.format('c.event_time')}, s.factors->>'regime',"
            " (s.factors->>'atr_percentile')::float8"
            " FROM (SELECT * FROM positions WHERE strategy = %s AND event = 'closed' AND mode = %s"
            "       ORDER BY event_time DESC LIMIT %s) c"
            " JOIN positions o ON o.mode = c.mode AND o.position_id = c.position_id AND o.event = 'opened'"
            " LEFT JOIN signals s ON s.signal_id = c.signal_id",
            (strategy, mode, PEER_LIMIT),
        ).fetchall()
    out = []
    for pid, direction, r_usd, net, qty, entry, t0, t1, regime, atr_pct in rows:
        factors = {"regime": regime, "atr_percentile": atr_pct}
        out.append(
            PeerTrade(
                f"{run_id}/{pid}" if run_id else pid,
                strategy,
                direction,
                regime_of(factors),
                r_usd,
                net,
                roi_pct(net, r_usd, qty, entry),
                t1 - t0,
            )
        )
    return out


def _path(
    conn: psycopg.Connection,
    market: tuple[str, str],
    opened: Mapping[str, Any],
    end: int,
    marks: Sequence[MarkTick],
    moments: list[int],
    breakeven_offset_r: float,
) -> PricePath:
    """The trades the counterfactuals need: ``sparse_path`` over the watched levels and moments (the
    funding times the marks announce among them)."""
    start = int(opened["event_time"])
    funding = [m.next_funding_time for m in marks if start <= m.next_funding_time <= end]
    levels = watched_levels(opened, breakeven_offset_r)
    return sparse_path(conn, market, start, end, levels, moments + funding)


def load_facts(
    conn: psycopg.Connection,
    position_id: str,
    *,
    mode: str | None = None,
    run_id: str | None = None,
    explain: Explainer | None = None,
) -> TradeFacts:
    """Every row the autopsy of one closed trade reads (module docstring)."""
    if run_id:
        return _backtest_facts(conn, position_id, run_id)
    ev = _position_events(conn, position_id, mode)
    opened, closed_ev = ev["opened"], ev["closed"]
    closed = dict(
        closed_ev,
        entry_time=opened["event_time"],
        exit_time=closed_ev["event_time"],
        qty=opened["qty"],
        tp1_hit="tp1" in ev,
    )
    signal = (
        _cur(conn)
        .execute(
            "SELECT score, factors, eval_time, config_rev FROM signals WHERE signal_id = %s", (opened["signal_id"],)
        )
        .fetchone()
    )
    features = None
    if signal is not None:
        closed["score"] = signal["score"]
        evaluation_id = opened["signal_id"].rsplit(":", 1)[0]
        features = (
            _cur(conn)
            .execute(
                "SELECT layer_scores, gate, inputs, score, direction FROM features"
                " WHERE evaluation_id = %s AND eval_time = %s",
                (evaluation_id, signal["eval_time"]),
            )
            .fetchone()
        )
    timeout_ms = int(opened.get("timeout_ms") or ExecutorConfig().timeout_ms(opened["strategy"]))
    opened["timeout_ms"] = timeout_ms
    start, end = (
        int(opened["event_time"]),
        max(int(closed["exit_time"]), int(opened["event_time"]) + timeout_ms) + _AFTER_MS,
    )
    market = (opened["exchange"], opened["symbol"])
    orders, fills, trade_ids = _orders_and_fills(conn, opened["signal_id"], position_id, opened["mode"], market)
    marks = _marks(conn, *market, start, end)
    be = breakeven_offset(opened, ev.get("tp1"), ExecutorConfig().breakeven_offset_r)
    moments = [start, int(closed["exit_time"]), start + timeout_ms] + [e["event_time"] for e in ev.values()]
    return TradeFacts(
        closed=closed,
        opened=opened,
        tp1=ev.get("tp1"),
        path=_path(conn, market, opened, end, marks, moments, be),
        marks=marks,
        orders=orders,
        fills=fills,
        population=_population(conn, opened["strategy"], opened["mode"], ""),
        factors=signal["factors"] if signal else None,
        layers=features["layer_scores"] if features else None,
        gate=features["gate"] if features else None,
        fill_trade_ids=trade_ids,
        confidence_model=_explained(conn, explain, opened, signal, features),
    )


def _explained(
    conn: psycopg.Connection,
    explain: Explainer | None,
    opened: Mapping[str, Any],
    signal: Mapping[str, Any] | None,
    features: Mapping[str, Any] | None,
) -> Mapping[str, Any] | None:
    """The explainer's answer for the trade's decision (None without a signal, its evaluation row or an
    explainer)."""
    if explain is None or signal is None or features is None:
        return None
    decision = {
        "strategy": opened["strategy"],
        "config_rev": signal.get("config_rev"),
        "signal_id": opened["signal_id"],
        "eval_time": signal["eval_time"],
        "inputs": features["inputs"],
        "layer_scores": features["layer_scores"],
        "score": features["score"],
        "direction": features["direction"] or opened["direction"],
    }
    return explain(conn, decision)


def _backtest_run(conn: psycopg.Connection, position_id: str, run_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    rows = (
        _cur(conn)
        .execute(
            "SELECT t.*, r.strategy, r.strategy_version, r.config_hash, r.config, r.params, r.run_id AS strategy_run_id"
            " FROM backtest_trades t JOIN backtest_runs r ON r.run_id = t.run_id"
            " WHERE t.position_id = %s AND (t.run_id = %s OR r.run_group = %s)",
            (position_id, run_id, run_id),
        )
        .fetchall()
    )
    if not rows:
        raise AutopsyError(f"no trade {position_id!r} in backtest run {run_id!r}")
    if len(rows) > 1:
        raise AutopsyError(f"trade {position_id!r} is in several strategies of run {run_id!r}: pass RUN_ID:STRATEGY")
    row = _num(rows[0])
    return row, row["params"].get("executor") or {}


def _backtest_facts(conn: psycopg.Connection, position_id: str, run_id: str) -> TradeFacts:
    """A backtest trade: the opened state its executor had, rebuilt from the row and the run's model
    (a taker entry at the paper slippage, which is what the backtest fills)."""
    t, executor = _backtest_run(conn, position_id, run_id)
    cfg = ExecutorConfig.model_validate(executor) if executor else ExecutorConfig()
    timeout_ms = cfg.timeout_ms(t["strategy"], int(t["config"].get("exits", {}).get("timeout_min", 0)) * 60_000 or None)
    qty, entry, slip = t["r_usd"] / t["risk_distance"], t["entry_price"], cfg.paper.slippage_bps / 1e4
    sign = 1 if t["direction"] == "LONG" else -1
    fill_price = entry * (1 + sign * slip)
    opened = {
        **{k: t[k] for k in ("position_id", "signal_id", "exchange", "symbol", "direction", "tier", "r_usd")},
        **{k: t[k] for k in ("strategy", "strategy_version", "config_hash", "sl_price", "tp1_price", "tp2_price")},
        "mode": "paper",
        "event": "opened",
        "entry_price": entry,
        "qty": qty,
        "fees_r": cfg.fees.taker * fill_price * qty / t["r_usd"],
        "slippage_r": slip * entry / t["risk_distance"],
        "funding_r": 0.0,
        "event_time": t["entry_time"],
        "timeout_ms": timeout_ms,
    }
    closed = dict(t, mode="backtest", qty=qty)
    end = max(int(t["exit_time"]), int(t["entry_time"]) + timeout_ms) + _AFTER_MS
    market = (t["exchange"], t["symbol"])
    marks = _marks(conn, *market, int(t["entry_time"]), end)
    moments = [int(t["entry_time"]), int(t["exit_time"]), int(t["entry_time"]) + timeout_ms]
    return TradeFacts(
        closed=closed,
        opened=opened,
        tp1=None,
        path=_path(conn, market, opened, end, marks, moments, cfg.breakeven_offset_r),
        marks=marks,
        population=_population(conn, t["strategy"], "paper", t["strategy_run_id"]),
        run_id=t["strategy_run_id"],
    )


def autopsy(
    conn: psycopg.Connection,
    position_id: str,
    *,
    mode: str | None = None,
    run_id: str | None = None,
    explain: Explainer | None = None,
) -> Autopsy:
    facts = load_facts(conn, position_id, mode=mode, run_id=run_id, explain=explain)
    defaults = None
    if run_id:
        executor = (
            _cur(conn)
            .execute("SELECT params->'executor' AS e FROM backtest_runs WHERE run_id = %s", (facts.run_id,))
            .fetchone()
        )
        defaults = ExecutorConfig.model_validate(executor["e"]) if executor and executor["e"] else None
    return build_autopsy(facts, defaults)


# --------------------------------------------------------------------------------------- storing
_COLUMNS = (
    "mode, run_id, position_id, strategy, exchange, symbol, direction, tier, regime, entry_time, exit_time,"
    " exit_reason, gross_r, fees_r, slippage_r, funding_r, net_r, roi_pct, cost_share, entry_slip_bps,"
    " exit_slip_bps, maker_share, peer_group, peer_count, roi_percentile, verdict, narrative, report, computed_at"
)


def autopsy_row(a: Autopsy, computed_ms: int) -> tuple[Any, ...]:
    d = a.as_dict()
    t, c, tca, p = d["trade"], d["costs"], d["tca"], d["peers"]
    return (
        t["mode"],
        t["run_id"],
        t["position_id"],
        t["strategy"],
        t["exchange"],
        t["symbol"],
        t["direction"],
        t["tier"],
        t["regime"],
        _ts(t["entry_time"]),
        _ts(t["exit_time"]),
        t["exit_reason"],
        c["gross_r"],
        c["fees_r"],
        c["slippage_r"],
        c["funding_r"],
        c["net_r"],
        t["roi_pct"],
        tca["cost_share"],
        tca["entry_slip_bps"],
        tca["exit_slip_bps"],
        tca["maker_share"],
        p["group"],
        p["count"],
        p["roi_percentile"],
        a.narrative[1] if len(a.narrative) > 1 else "",
        " ".join(a.narrative),
        json.dumps(_finite(d), allow_nan=False),
        _ts(computed_ms),
    )


def _finite(value: Any) -> Any:
    """JSON has no NaN: a number that is not finite (a scenario the path ended before) becomes null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def store(conn: psycopg.Connection, autopsies: Sequence[Autopsy], computed_ms: int) -> int:
    rows = [autopsy_row(a, computed_ms) for a in autopsies]
    with conn.cursor() as cur:
        cur.executemany(
            f"INSERT INTO trade_autopsies ({_COLUMNS}) VALUES ({', '.join(['%s'] * 29)})"  # nosec B608 # constant SQL fragments (_MS, _COLUMNS); values are bound
            " ON CONFLICT (mode, run_id, position_id) DO UPDATE SET "
            + ", ".join(f"{c.strip()} = EXCLUDED.{c.strip()}" for c in _COLUMNS.split(",")[3:]),
            rows,
        )
    return len(rows)


def write_autopsies(conn: psycopg.Connection, since_ms: int, until_ms: int, explain: Explainer | None = None) -> int:
    """Autopsy every position (any mode) closed in [since_ms, until_ms) into ``trade_autopsies``;
    returns how many were written (a trade whose rows are incomplete is logged and left out).
    Idempotent: a trade's row is replaced. Commits."""
    closed = (
        _cur(conn)
        .execute(
            "SELECT mode, position_id FROM positions WHERE event = 'closed' AND event_time >= %s AND event_time < %s"
            " ORDER BY event_time, position_id",
            (_ts(since_ms), _ts(until_ms)),
        )
        .fetchall()
    )
    done = []
    for r in closed:
        try:
            done.append(autopsy(conn, r["position_id"], mode=r["mode"], explain=explain))
        except AutopsyError as exc:  # one trade's missing rows must not cost the others their autopsy
            log.warning("trade autopsy skipped", position_id=r["position_id"], mode=r["mode"], reason=str(exc))
    n = store(conn, done, until_ms)
    conn.commit()
    return n


#: closed positions without an autopsy whose price path is stored to its end: the path runs to the
#: timeout (or the exit, when later) plus ``_AFTER_MS``, so that every scenario (a wider take-profit
#: rides on to the timeout) is replayed on data that is all there. Market data time, not wall time:
#: a replayed session of 2024 gets its autopsies as soon as its trades are stored.
_PENDING_SQL = """
SELECT c.mode, c.position_id
FROM positions c
JOIN positions o ON o.mode = c.mode AND o.position_id = c.position_id AND o.event = 'opened'
CROSS JOIN LATERAL (
    SELECT t.trade_time FROM trades t WHERE t.exchange = c.exchange AND t.symbol = c.symbol
    ORDER BY t.agg_id DESC LIMIT 1) newest
WHERE c.event = 'closed'
  AND NOT EXISTS (SELECT 1 FROM trade_autopsies a
                  WHERE a.mode = c.mode AND a.run_id = '' AND a.position_id = c.position_id)
  AND greatest(c.event_time, o.event_time + make_interval(secs => coalesce(o.timeout_ms, %(timeout)s) / 1000.0))
      + make_interval(secs => %(after)s / 1000.0) <= newest.trade_time
ORDER BY c.event_time, c.position_id
LIMIT %(limit)s
"""
PENDING_LIMIT = 2_000


def write_pending_autopsies(
    conn: psycopg.Connection, now_ms: int, limit: int = PENDING_LIMIT, explain: Explainer | None = None
) -> int:
    """Autopsy the closed positions that have none yet and whose price path is stored to its end
    (``_PENDING_SQL``), oldest first, at most ``limit`` a call (the hourly pass of ``tapeflow labels
    serve``; a longer backlog is worked through pass by pass). Returns how many were written; a trade
    whose rows are incomplete is logged and tried again at the next call. Commits."""
    rows = (
        _cur(conn)
        .execute(
            _PENDING_SQL,
            {"timeout": ExecutorConfig().timeout_min * 60_000, "after": _AFTER_MS, "limit": limit},
        )
        .fetchall()
    )
    done = []
    for r in rows:
        try:
            done.append(autopsy(conn, r["position_id"], mode=r["mode"], explain=explain))
        except AutopsyError as exc:
            log.warning("trade autopsy skipped", position_id=r["position_id"], mode=r["mode"], reason=str(exc))
    n = store(conn, done, now_ms)
    conn.commit()
    return n


# --------------------------------------------------------------------------------------- reporting
DIMENSIONS = ("tier", "regime", "hour", "exit_reason")
_SUMS = ("gross_r", "fees_r", "slippage_r", "funding_r", "net_r")


def _bucket() -> dict[str, float]:
    return {"trades": 0, "wins": 0, **dict.fromkeys(_SUMS, 0.0)}


def aggregate(
    conn: psycopg.Connection, strategy: str, from_ms: int, to_ms: int, modes: Sequence[str] = ("paper",)
) -> dict[str, Any]:
    """Where a strategy's money went over [from_ms, to_ms) of exit time: gross, fees, slippage, funding
    and net in R, in total and by tier, regime, UTC hour of entry and exit reason; and its five worst
    trades (the ones to run ``autopsy`` on)."""
    rows = (
        _cur(conn)
        .execute(
            "SELECT c.position_id, c.tier, c.exit_reason, o.event_time AS entry_time, c.pnl_r_gross AS gross_r, c.fees_r,"
            " c.slippage_r, c.funding_r, c.pnl_r_net AS net_r, s.factors"
            " FROM positions c JOIN positions o ON o.mode = c.mode AND o.position_id = c.position_id AND o.event = 'opened'"
            " LEFT JOIN signals s ON s.signal_id = c.signal_id"
            " WHERE c.strategy = %s AND c.event = 'closed' AND c.mode = ANY(%s) AND c.event_time >= %s AND c.event_time < %s",
            (strategy, list(modes), _ts(from_ms), _ts(to_ms)),
        )
        .fetchall()
    )
    total = _bucket()
    by: dict[str, dict[str, dict[str, float]]] = {d: {} for d in DIMENSIONS}
    for r in rows:
        keys = {
            "tier": r["tier"],
            "regime": regime_of(r["factors"]),
            "hour": f"{r['entry_time'].astimezone(UTC).hour:02d}",
            "exit_reason": r["exit_reason"],
        }
        for bucket in [total] + [by[d].setdefault(keys[d], _bucket()) for d in DIMENSIONS]:
            bucket["trades"] += 1
            bucket["wins"] += float(r["net_r"]) > 0
            for name in _SUMS:
                bucket[name] += float(r[name] or 0)
    worst = sorted(rows, key=lambda r: (float(r["net_r"]), r["position_id"]))[:5]
    return {
        "strategy": strategy,
        "modes": list(modes),
        "worst": [
            {"position_id": r["position_id"], "net_r": float(r["net_r"]), "exit_reason": r["exit_reason"]}
            for r in worst
        ],
        "from": from_ms,
        "to": to_ms,
        "total": total,
        "by": {d: dict(sorted(by[d].items())) for d in DIMENSIONS},
    }
