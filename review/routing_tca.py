"""Routing TCA: what routed entry orders paid per notional bucket and day, and the routing table those
numbers propose (`tapeflow execution retune`).

Every routed entry order says how it was routed in its reason (``execution.routing``: ``route <bucket>
n=<notional> maker|taker k/n [notes]``). Per order, over its fills: ``slip_bps`` against the mid the
executor knew when it sent the order (``review.tca.slip_bps``: > 0 is worse for us), the filled share
and, for a maker order, the time from sending to its first fill. Orders are put in the bucket of the
table being tuned by the notional in their reason (so a proposal for a table with other bounds
regroups them), and by the UTC day they were sent.

Per bucket and day (``BucketDay``): entries, maker orders and their fill ratio (filled / requested
quantity), the share of the entries' filled quantity that was maker, the quantity-weighted slippage of
the maker and of the taker orders, and the 90th percentile of the maker fill times.

The proposal (``propose``), per bucket with enough samples (``min_samples``, over the whole window),
each change with its reason; everything else is kept:
- maker wait: the 90th percentile of the maker fill times, rounded up to 100 ms, within [500, 10,000]
  ms: long enough for nine in ten of the maker fills seen, no longer (a longer rest only adds drift);
- slices: the taker orders' slippage above ``target_slip_bps``: one slice more (at most ``max_slices``),
  below half of it: one fewer (at least 1); the interval is kept (1 s when slices go from 1 to 2).
Rules of thumb for a person to review, not an optimiser: the report shows the numbers behind each one.

One TCA, two sources: the statistics take ``RoutedOrder`` and ``Fill`` rows, read from the ``orders``
and ``fills`` tables (``load_routed``: paper, testnet, live) or from the executor's own order and fill
records (``routed_from_records``: a backtest keeps those of its routed entries in its result,
``backtest.routed_orders``); ``routing_tca`` computes the same statistics from either.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from execution.routing import bucket_for, parse_route
from review.tca import Fill, slip_bps
from stream_apps.core.routing_table import RouteBucket, RoutingTable

MIN_WAIT_MS, MAX_WAIT_MS = 500, 10_000


@dataclass(frozen=True, slots=True)
class RoutedOrder:
    """One routed entry order as sent (its PENDING_NEW record)."""

    client_order_id: str
    signal_id: str
    side: str
    qty: float
    sent_time: int
    mid_at_send: float | None
    reason: str | None
    config_rev: int | None = None  # the strategy revision of the signal the order serves


@dataclass(frozen=True, slots=True)
class OrderStat:
    order: RoutedOrder
    notional: float  # the entry's, from the reason
    role: str  # maker | taker
    filled: float
    vwap: float | None
    slip_bps: float | None  # None: nothing filled, or no mid at send
    first_fill_ms: int | None  # time from sending to the first fill

    @property
    def day(self) -> str:
        return datetime.fromtimestamp(self.order.sent_time / 1000, tz=UTC).strftime("%Y-%m-%d")


def parse_reason(reason: str | None) -> tuple[float, str] | None:
    """(entry notional, maker|taker) of a routed order's reason; None for any other order."""
    found = parse_route(reason)  # the executor's own reading of the reasons it writes
    return (found.notional, found.role) if found else None


def order_stats(orders: Iterable[RoutedOrder], fills: Sequence[Fill]) -> list[OrderStat]:
    by_order: dict[str, list[Fill]] = {}
    for f in fills:
        by_order.setdefault(f.client_order_id, []).append(f)
    out = []
    for o in orders:
        parsed = parse_reason(o.reason)
        if parsed is None:
            continue
        own = by_order.get(o.client_order_id, [])
        filled = sum(f.qty for f in own)
        vwap = sum(f.qty * f.price for f in own) / filled if filled > 0 else None
        slip = slip_bps(o.side, vwap, o.mid_at_send) if vwap is not None and o.mid_at_send else None
        first = min((f.event_time for f in own), default=None)
        out.append(
            OrderStat(o, parsed[0], parsed[1], filled, vwap, slip, None if first is None else first - o.sent_time)
        )
    return out


def _weighted_slip(stats: Iterable[OrderStat]) -> float | None:
    rows = [(s.filled, s.slip_bps) for s in stats if s.slip_bps is not None and s.filled > 0]
    total = sum(q for q, _ in rows)
    return sum(q * b for q, b in rows) / total if total else None


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-quantile by linear interpolation between closest ranks (numpy's default); None when empty."""
    if not values:
        return None
    xs = sorted(values)
    pos = (len(xs) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


@dataclass(frozen=True, slots=True)
class BucketDay:
    """One bucket's routed orders over one UTC day (``day`` "all": the whole window)."""

    bucket: str
    day: str
    entries: int
    maker_orders: int
    taker_orders: int
    maker_fill_ratio: float | None  # filled / requested quantity of the maker orders
    maker_share: float | None  # maker share of the entries' filled quantity
    maker_slip_bps: float | None
    taker_slip_bps: float | None
    maker_fill_p90_ms: float | None
    maker_fill_ms: tuple[float, ...] = field(default=(), repr=False)

    @property
    def maker_fill_p50_ms(self) -> float | None:
        return percentile(self.maker_fill_ms, 0.5)


def summarise(bucket: str, day: str, stats: Sequence[OrderStat]) -> BucketDay:
    makers = [s for s in stats if s.role == "maker"]
    takers = [s for s in stats if s.role == "taker"]
    asked = sum(s.order.qty for s in makers)
    filled = sum(s.filled for s in stats)
    times = tuple(float(s.first_fill_ms) for s in makers if s.first_fill_ms is not None)
    return BucketDay(
        bucket,
        day,
        len({s.order.signal_id for s in stats}),
        len(makers),
        len(takers),
        sum(s.filled for s in makers) / asked if asked else None,
        sum(s.filled for s in makers) / filled if filled else None,
        _weighted_slip(makers),
        _weighted_slip(takers),
        percentile(times, 0.9),
        times,
    )


def by_bucket_and_day(table: RoutingTable, stats: Sequence[OrderStat]) -> tuple[list[BucketDay], list[BucketDay]]:
    """(per bucket and day, per bucket over the window), buckets in the table's order, days ascending."""
    groups: dict[tuple[int, str], list[OrderStat]] = {}
    for s in stats:
        groups.setdefault((bucket_for(table, s.notional), s.day), []).append(s)
    daily = [summarise(table.label(b), day, groups[(b, day)]) for b, day in sorted(groups)]
    totals = []
    for b in range(len(table.buckets)):
        rows = [s for (bb, _), ss in groups.items() if bb == b for s in ss]
        totals.append(summarise(table.label(b), "all", rows))
    return daily, totals


@dataclass(frozen=True, slots=True)
class RoutingTca:
    """The TCA of one set of routed orders against one table (``routing_tca``)."""

    stats: list[OrderStat]
    daily: list[BucketDay]
    totals: list[BucketDay]  # in the table's bucket order

    def worst(self, n: int = 5) -> list[OrderStat]:
        """The ``n`` orders with the largest slippage (worst for us first)."""
        return sorted((s for s in self.stats if s.slip_bps is not None), key=lambda s: -(s.slip_bps or 0.0))[:n]


def routing_tca(table: RoutingTable, orders: Iterable[RoutedOrder], fills: Sequence[Fill]) -> RoutingTca:
    """Per-order statistics, then per bucket and day and per bucket, of the routed orders of either source."""
    stats = order_stats(orders, fills)
    daily, totals = by_bucket_and_day(table, stats)
    return RoutingTca(stats, daily, totals)


def routed_from_records(
    orders: Iterable[Mapping[str, Any]], fills: Iterable[Mapping[str, Any]]
) -> tuple[list[RoutedOrder], list[Fill]]:
    """The routed entry orders among the executor's order records (their PENDING_NEW record: the order as
    sent, with its mid at send) and their fills among its fill records: what ``load_routed`` reads from
    the tables those records are written to, so either source gives the same rows."""
    out = [
        RoutedOrder(
            r["client_order_id"],
            r.get("signal_id") or "",
            r["side"],
            float(r["qty"]),
            int(r["event_time"]),
            None if r.get("mid_at_send") is None else float(r["mid_at_send"]),
            r.get("reason"),
            r.get("config_rev"),
        )
        for r in orders
        if r["leg"] == "entry" and r["state"] == "PENDING_NEW" and (r.get("reason") or "").startswith("route ")
    ]
    ids = {o.client_order_id for o in out}
    own = [
        Fill(
            f["client_order_id"],
            float(f["price"]),
            float(f["qty"]),
            float(f["fee"]),
            f["liquidity"],
            int(f["event_time"]),
        )
        for f in fills
        if f["client_order_id"] in ids
    ]
    return out, own


@dataclass(frozen=True, slots=True)
class Change:
    bucket: str
    key: str
    old: float
    new: float
    why: str


def propose(
    table: RoutingTable,
    totals: Sequence[BucketDay],
    *,
    min_samples: int = 20,
    target_slip_bps: float = 2.0,
    max_slices: int = 8,
) -> tuple[RoutingTable, list[Change]]:
    """The proposed table and its changes (module docstring); ``totals`` in the table's bucket order."""
    buckets, changes = [], []
    for bucket, total in zip(table.buckets, totals, strict=True):
        wait, slices, interval = bucket.maker_wait_ms, bucket.slices, bucket.slice_interval_ms
        if len(total.maker_fill_ms) >= min_samples and total.maker_fill_p90_ms is not None:
            proposed = int(min(MAX_WAIT_MS, max(MIN_WAIT_MS, math.ceil(total.maker_fill_p90_ms / 100) * 100)))
            if proposed != wait:
                why = f"p90 of {len(total.maker_fill_ms)} maker fill times {total.maker_fill_p90_ms:.0f} ms"
                changes.append(Change(total.bucket, "maker_wait_ms", wait, proposed, why))
                wait = proposed
        slip = total.taker_slip_bps
        if total.taker_orders >= min_samples and slip is not None:
            new = slices
            if slip > target_slip_bps and slices < max_slices:
                new = slices + 1
            elif slip < target_slip_bps / 2 and slices > 1:
                new = slices - 1
            if new != slices:
                why = f"taker slippage {slip:.2f} bps over {total.taker_orders} orders, target {target_slip_bps:g}"
                changes.append(Change(total.bucket, "slices", slices, new, why))
                if slices == 1 and interval == 0:
                    changes.append(
                        Change(total.bucket, "slice_interval_ms", 0, 1000, "a second slice needs an interval")
                    )
                    interval = 1000
                slices = new
        buckets.append(RouteBucket(up_to=bucket.up_to, maker_wait_ms=wait, slices=slices, slice_interval_ms=interval))
    return table.model_copy(update={"buckets": buckets}), changes


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def report_text(
    table: RoutingTable,
    daily: Sequence[BucketDay],
    totals: Sequence[BucketDay],
    changes: Sequence[Change],
    window: str,
    worst: Sequence[OrderStat] = (),
) -> str:
    """The retune report as plain text (fixed-width columns)."""
    head = (
        f"{'bucket':<10} {'day':<10} {'entries':>7} {'maker':>5} {'taker':>5} {'fill%':>6} {'maker%':>6} "
        f"{'mk slip':>8} {'tk slip':>8} {'p90 fill':>9}"
    )
    lines = [f"routing TCA {window}", "", head]
    for row in [*daily, *totals]:
        lines.append(
            f"{row.bucket:<10} {row.day:<10} {row.entries:>7} {row.maker_orders:>5} {row.taker_orders:>5} "
            f"{_num(None if row.maker_fill_ratio is None else 100 * row.maker_fill_ratio, '6.1f'):>6} "
            f"{_num(None if row.maker_share is None else 100 * row.maker_share, '6.1f'):>6} "
            f"{_num(row.maker_slip_bps, '8.2f'):>8} {_num(row.taker_slip_bps, '8.2f'):>8} "
            f"{_num(row.maker_fill_p90_ms, '9.0f'):>9}"
        )
    lines += ["", "slip in bps against the mid at send (> 0: worse for us); fill% of the maker quantity; ms", ""]
    if worst:
        lines.append("largest slippage (order, bucket, entry notional, role, slip bps)")
        lines += [
            f"  {s.order.client_order_id}  {table.label(bucket_for(table, s.notional))}  {s.notional:.2f}  {s.role}"
            f"  {s.slip_bps:.2f}"
            for s in worst
        ]
        lines.append("")
    if not changes:
        lines.append("proposal: keep the table (no bucket has enough samples, or its numbers fit it)")
    else:
        lines.append("proposal:")
        lines += [f"  {c.bucket}: {c.key} {c.old:g} -> {c.new:g} ({c.why})" for c in changes]
    return "\n".join(lines) + "\n"


def load_routed(
    conn: object,
    mode: str,
    since_ms: int,
    until_ms: int,
    strategy: str | None = None,
    revision: int | None = None,
) -> tuple[list[RoutedOrder], list[Fill]]:
    """The routed entry orders sent in ``[since_ms, until_ms)`` (their PENDING_NEW rows, with the mid
    at send) and their fills, from the ``orders`` and ``fills`` tables; ``strategy``: only the orders of
    its signals (a signal id starts with the strategy's name); ``revision``: only the orders of that
    strategy revision (the ``config_rev`` every order record carries). ``conn``: a psycopg connection."""
    import psycopg

    assert isinstance(conn, psycopg.Connection)
    sql = (
        "SELECT client_order_id, signal_id, side, qty, reason, mid_at_send,"
        " (extract(epoch FROM event_time) * 1000)::bigint AS sent, config_rev FROM orders"
        " WHERE mode = %s AND leg = 'entry' AND state = 'PENDING_NEW' AND reason LIKE 'route %%'"
        " AND event_time >= to_timestamp(%s / 1000.0) AND event_time < to_timestamp(%s / 1000.0)"
    )
    params: list[object] = [mode, since_ms, until_ms]
    if strategy:
        sql += " AND signal_id LIKE %s"
        params.append(strategy.replace("%", r"\%").replace("_", r"\_") + ":%")
    if revision is not None:
        sql += " AND config_rev = %s"
        params.append(revision)
    rows = conn.execute(sql + " ORDER BY event_time, client_order_id", params).fetchall()
    orders = [
        RoutedOrder(cid, sid or "", side, float(qty), int(sent), None if mid is None else float(mid), reason, rev)
        for cid, sid, side, qty, reason, mid, sent, rev in rows
    ]
    fill_rows = conn.execute(
        "SELECT client_order_id, price, qty, fee, liquidity, (extract(epoch FROM event_time) * 1000)::bigint"
        " FROM fills WHERE mode = %s AND client_order_id = ANY(%s)",
        (mode, [o.client_order_id for o in orders]),
    ).fetchall()
    fills = [Fill(cid, float(p), float(q), float(fee), liq, int(t)) for cid, p, q, fee, liq, t in fill_rows]
    return orders, fills
