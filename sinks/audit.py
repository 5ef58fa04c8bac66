"""Continuity audit of what the database holds for one symbol over a time range.

The old system's hourly "continuity report" (agg_id continuity, gaps, freshness) was the tool its
users trusted most: Binance agg_ids are consecutive per symbol, so any jump is provably missing
data, not a quiet market. This module answers, for [start, end):
* trades: how many, which agg_id ranges are missing (exact inclusive ranges, with the trade times
  around each hole, and whether the producer reported it on md.gaps), duplicated agg_ids (the
  primary key includes trade_time, so a duplicate means one id stored with two times), and the
  continuity ratio the old system's acceptance used (>99.9%);
* bars_1m: minutes without a bar, and the bars' trade counts against the trades table;
* rows per table in the range, freshness (latest row vs `now`) per table, rows parked in DEFAULT
  partitions.

Efficiency on large tables: one ordered pass over the symbol's primary-key index computes every
trade statistic with `agg_id - lag(agg_id)`, aggregated in SQL, so no row leaves the server; the
listing of anomalies is a second pass made only when the first found some. The time filter prunes
partitions/chunks. Freshness uses ORDER BY <indexed key> DESC LIMIT 1 per table.

`now` is injected (tests, reproducible reports); without it the database clock is used.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql

from sinks.partitions import DefaultPartitionRows, default_partition_rows

TRADES_STREAM = "md.trades"

# table -> (time column, ORDER BY column of an index leading with (exchange, symbol), per symbol?)
_PER_SYMBOL_TABLES: dict[str, tuple[str, str]] = {
    "trades": ("trade_time", "agg_id"),
    "depth_updates": ("event_time", "final_update_id"),
    "depth_snapshots": ("event_time", "last_update_id"),
    "liquidations": ("trade_time", "trade_time"),
    "mark_prices": ("event_time", "event_time"),
    "market_indicators": ("event_time", "event_time"),
    "bars_1m": ("open_time", "open_time"),
    "features": ("eval_time", "eval_time"),
    "signals": ("eval_time", "eval_time"),
    "orders": ("event_time", "event_time"),
    "fills": ("event_time", "event_time"),
    "positions": ("event_time", "event_time"),
    "data_gaps": ("detected_time", "detected_time"),
}
_GLOBAL_TABLES: dict[str, str] = {"pipeline_errors": "event_time", "risk_events": "event_time"}


@dataclass(frozen=True)
class AggGap:
    """Missing agg_ids from_id..to_id (inclusive) between two stored trades."""

    from_id: int
    to_id: int
    after_time: datetime | None  # trade_time of the trade before the hole
    before_time: datetime | None  # trade_time of the trade after the hole
    known: bool  # covered by a data_gaps row (the producer reported it on md.gaps)

    @property
    def missing(self) -> int:
        return self.to_id - self.from_id + 1


@dataclass(frozen=True)
class TradeContinuity:
    rows: int
    first_agg_id: int | None
    last_agg_id: int | None
    first_time: datetime | None
    last_time: datetime | None
    missing: int  # ids absent between first_agg_id and last_agg_id (and before first, see gaps)
    duplicate_rows: int  # rows whose agg_id equals the previous row's
    gap_count: int
    gaps: tuple[AggGap, ...]  # at most max_listed, in agg_id order
    duplicate_ids: tuple[int, ...]  # at most max_listed
    previous_agg_id: int | None  # last stored agg_id before the range (a hole at the start is a gap)

    @property
    def expected(self) -> int:
        """Distinct ids the range should hold: first..last, plus a hole just before the range."""
        if self.first_agg_id is None:
            return 0
        lead = 0 if self.previous_agg_id is None else max(self.first_agg_id - self.previous_agg_id - 1, 0)
        return self.last_agg_id - self.first_agg_id + 1 + lead

    @property
    def continuity(self) -> float | None:
        """Share of expected agg_ids present (1.0 = no hole); None without trades."""
        if not self.expected:
            return None
        return (self.expected - self.missing) / self.expected

    @property
    def truncated(self) -> bool:
        return len(self.gaps) < self.gap_count


@dataclass(frozen=True)
class BarCoverage:
    bars: int
    minutes: int  # whole minutes in [start, end)
    bar_trade_count: int  # sum of bars_1m.trade_count over those bars
    trades_in_bar_span: int  # trades stored in the same minutes

    @property
    def minutes_without_bar(self) -> int:
        return max(self.minutes - self.bars, 0)


@dataclass(frozen=True)
class Freshness:
    table: str
    latest: datetime | None
    age_seconds: float | None  # now - latest


@dataclass(frozen=True)
class AuditReport:
    exchange: str
    symbol: str
    start: datetime
    end: datetime
    now: datetime
    trades: TradeContinuity
    bars: BarCoverage
    counts: dict[str, int]
    freshness: tuple[Freshness, ...]
    default_rows: tuple[DefaultPartitionRows, ...] = field(default=())

    @property
    def problems(self) -> list[str]:
        out = []
        silent = [g for g in self.trades.gaps if not g.known]
        if self.trades.gap_count:
            out.append(
                f"{self.trades.missing} agg_ids missing in {self.trades.gap_count} gap(s)"
                + (f", {len(silent)} not reported on md.gaps" if silent else "")
            )
        if self.trades.duplicate_rows:
            out.append(f"{self.trades.duplicate_rows} duplicate trade row(s)")
        if self.bars.bar_trade_count != self.bars.trades_in_bar_span:
            out.append(
                f"bars count {self.bars.bar_trade_count} trades but the trades table has "
                f"{self.bars.trades_in_bar_span} in the same minutes"
            )
        parked = [d for d in self.default_rows if d.rows]
        if parked:
            out.append("rows in DEFAULT partitions: " + ", ".join(f"{d.table} {d.rows}" for d in parked))
        return out

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (`--json`): datetimes as ISO 8601 UTC strings, derived figures included."""

        def conv(v: Any) -> Any:
            if isinstance(v, datetime):
                return _iso(v)
            if isinstance(v, dict):
                return {k: conv(x) for k, x in v.items()}
            if isinstance(v, (list, tuple)):
                return [conv(x) for x in v]
            return v

        d = conv(asdict(self))
        d["trades"].update(expected=self.trades.expected, continuity=self.trades.continuity)
        for g, src in zip(d["trades"]["gaps"], self.trades.gaps):
            g["missing"] = src.missing
        d["bars"]["minutes_without_bar"] = self.bars.minutes_without_bar
        d["ok"] = self.ok
        d["problems"] = self.problems
        return d


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _utc(t: datetime, name: str) -> datetime:
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError(f"{name} must be an aware datetime (got naive {t!r})")
    return t.astimezone(UTC)


_TRADE_STATS = """
SELECT count(*),
       min(agg_id), max(agg_id), min(trade_time), max(trade_time),
       count(*) FILTER (WHERE step = 0),
       count(*) FILTER (WHERE step > 1),
       coalesce(sum(step - 1) FILTER (WHERE step > 1), 0)::bigint
FROM (SELECT agg_id, trade_time, agg_id - lag(agg_id) OVER (ORDER BY agg_id, trade_time) AS step
      FROM trades
      WHERE exchange = %(exchange)s AND symbol = %(symbol)s
        AND trade_time >= %(start)s AND trade_time < %(end)s) s
"""

_TRADE_ANOMALIES = """
SELECT prev_id, agg_id, prev_time, trade_time
FROM (SELECT agg_id, trade_time,
             lag(agg_id) OVER w AS prev_id, lag(trade_time) OVER w AS prev_time
      FROM trades
      WHERE exchange = %(exchange)s AND symbol = %(symbol)s
        AND trade_time >= %(start)s AND trade_time < %(end)s
      WINDOW w AS (ORDER BY agg_id, trade_time)) s
WHERE agg_id - prev_id <> 1
ORDER BY agg_id
LIMIT %(limit)s
"""

_PREVIOUS_TRADE = """
SELECT agg_id, trade_time FROM trades
WHERE exchange = %(exchange)s AND symbol = %(symbol)s AND agg_id < %(first)s
ORDER BY agg_id DESC LIMIT 1
"""

_KNOWN_GAPS = """
SELECT from_id, to_id FROM data_gaps
WHERE exchange = %(exchange)s AND symbol = %(symbol)s AND stream = %(stream)s
  AND to_id >= %(lo)s AND from_id <= %(hi)s
"""


def _trade_continuity(conn: psycopg.Connection, p: dict[str, Any], max_listed: int) -> TradeContinuity:
    rows, first, last, t0, t1, dups, gap_count, missing = conn.execute(_TRADE_STATS, p).fetchone()
    previous = None
    gaps: list[tuple[int, int, datetime | None, datetime | None]] = []
    dup_ids: list[int] = []
    if rows:
        prev = conn.execute(_PREVIOUS_TRADE, {**p, "first": first}).fetchone()
        if prev is not None:
            previous = prev[0]
            if first - prev[0] > 1:  # a hole straddling the start of the range
                gaps.append((prev[0] + 1, first - 1, prev[1], t0))
                gap_count += 1
                missing += first - prev[0] - 1
    if gap_count - len(gaps) or dups:
        for prev_id, agg_id, prev_time, trade_time in conn.execute(_TRADE_ANOMALIES, {**p, "limit": 2 * max_listed}):
            if agg_id == prev_id:
                if len(dup_ids) < max_listed and (not dup_ids or dup_ids[-1] != agg_id):
                    dup_ids.append(agg_id)
            elif len(gaps) < max_listed:
                gaps.append((prev_id + 1, agg_id - 1, prev_time, trade_time))
    known = []
    if gaps:
        known = conn.execute(
            _KNOWN_GAPS, {**p, "stream": TRADES_STREAM, "lo": gaps[0][0], "hi": gaps[-1][1]}
        ).fetchall()
    listed = tuple(
        AggGap(lo, hi, a, b, any(k_lo <= lo and hi <= k_hi for k_lo, k_hi in known)) for lo, hi, a, b in gaps
    )
    return TradeContinuity(rows, first, last, t0, t1, missing, dups, gap_count, listed, tuple(dup_ids), previous)


_BAR_COVERAGE = """
WITH b AS (
    SELECT count(*) AS bars, coalesce(sum(trade_count), 0)::bigint AS bar_trades,
           min(open_time) AS span_start, max(close_time) AS span_end
    FROM bars_1m
    WHERE exchange = %(exchange)s AND symbol = %(symbol)s
      AND open_time >= %(start)s AND close_time <= %(end)s
)
SELECT b.bars, b.bar_trades,
       (SELECT count(*) FROM trades t
        WHERE t.exchange = %(exchange)s AND t.symbol = %(symbol)s
          AND t.trade_time >= b.span_start AND t.trade_time < b.span_end
          AND date_bin('1 minute', t.trade_time, TIMESTAMPTZ '2000-01-03 00:00:00+00') IN (
              SELECT open_time FROM bars_1m
              WHERE exchange = %(exchange)s AND symbol = %(symbol)s
                AND open_time >= %(start)s AND close_time <= %(end)s))
FROM b
"""


def _bar_coverage(conn: psycopg.Connection, p: dict[str, Any]) -> BarCoverage:
    bars, bar_trades, trades_in_span = conn.execute(_BAR_COVERAGE, p).fetchone()
    first_minute = p["start"].replace(second=0, microsecond=0)
    if first_minute < p["start"]:
        first_minute += timedelta(minutes=1)
    last_minute = p["end"].replace(second=0, microsecond=0)
    minutes = max(int((last_minute - first_minute).total_seconds() // 60), 0)
    return BarCoverage(bars, minutes, int(bar_trades), trades_in_span or 0)


def _counts(conn: psycopg.Connection, p: dict[str, Any], trades_rows: int) -> dict[str, int]:
    counts = {"trades": trades_rows}
    for table, (time_col, _) in _PER_SYMBOL_TABLES.items():
        if table == "trades":
            continue
        q = sql.SQL(
            "SELECT count(*) FROM {} WHERE exchange = %(exchange)s AND symbol = %(symbol)s "
            "AND {} >= %(start)s AND {} < %(end)s"
        ).format(sql.Identifier(table), sql.Identifier(time_col), sql.Identifier(time_col))
        counts[table] = conn.execute(q, p).fetchone()[0]
    for table, time_col in _GLOBAL_TABLES.items():
        q = sql.SQL("SELECT count(*) FROM {} WHERE {} >= %(start)s AND {} < %(end)s").format(
            sql.Identifier(table), sql.Identifier(time_col), sql.Identifier(time_col)
        )
        counts[table] = conn.execute(q, p).fetchone()[0]
    return counts


def _freshness(conn: psycopg.Connection, p: dict[str, Any], now: datetime) -> tuple[Freshness, ...]:
    out = []
    queries = [
        (
            t,
            sql.SQL(
                "SELECT {} FROM {} WHERE exchange = %(exchange)s AND symbol = %(symbol)s ORDER BY {} DESC LIMIT 1"
            ).format(sql.Identifier(tc), sql.Identifier(t), sql.Identifier(oc)),
        )
        for t, (tc, oc) in _PER_SYMBOL_TABLES.items()
    ]
    queries += [
        (
            t,
            sql.SQL("SELECT {} FROM {} ORDER BY {} DESC LIMIT 1").format(
                sql.Identifier(tc), sql.Identifier(t), sql.Identifier(tc)
            ),
        )
        for t, tc in _GLOBAL_TABLES.items()
    ]
    for table, q in queries:
        row = conn.execute(q, p).fetchone()
        latest = row[0] if row else None
        out.append(Freshness(table, latest, None if latest is None else (now - latest).total_seconds()))
    return tuple(out)


def audit(
    conn: psycopg.Connection,
    symbol: str,
    start: datetime,
    end: datetime,
    exchange: str = "binance",
    *,
    now: datetime | None = None,
    max_listed: int = 1000,
) -> AuditReport:
    """Audit `exchange:symbol` over [start, end) (aware datetimes); read-only, any role with SELECT."""
    start, end = _utc(start, "start"), _utc(end, "end")
    if end <= start:
        raise ValueError(f"empty range: end {end.isoformat()} is not after start {start.isoformat()}")
    now = _utc(now, "now") if now is not None else conn.execute("SELECT now()").fetchone()[0]
    p = {"exchange": exchange, "symbol": symbol, "start": start, "end": end}
    trades = _trade_continuity(conn, p, max_listed)
    return AuditReport(
        exchange=exchange,
        symbol=symbol,
        start=start,
        end=end,
        now=now,
        trades=trades,
        bars=_bar_coverage(conn, p),
        counts=_counts(conn, p, trades.rows),
        freshness=_freshness(conn, p, now),
        default_rows=tuple(default_partition_rows(conn)),
    )


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if abs(seconds) < 120:
        return f"{seconds:.1f} s"
    if abs(seconds) < 7200:
        return f"{seconds / 60:.1f} min"
    if abs(seconds) < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def render(report: AuditReport) -> str:
    """The report as text for a terminal."""
    t = report.trades
    header = (
        f"audit {report.exchange}:{report.symbol}  {_iso(report.start)} .. {_iso(report.end)}  (now {_iso(report.now)})"
    )
    lines = [header, ""]
    if t.rows:
        cont = f"{t.continuity * 100:.4f}%"
        lines.append(
            f"trades: {t.rows:,} rows, agg_id {t.first_agg_id}..{t.last_agg_id}, continuity {cont} "
            f"({t.missing:,} missing in {t.gap_count} gap(s), {t.duplicate_rows} duplicate row(s))"
        )
    else:
        lines.append("trades: none in range")
    for g in t.gaps:
        around = (
            f"between {_iso(g.after_time) if g.after_time else '?'} and {_iso(g.before_time) if g.before_time else '?'}"
        )
        lines.append(
            f"  gap {g.from_id}..{g.to_id} ({g.missing:,} missing) {around}"
            f"{'  [reported on md.gaps]' if g.known else '  [NOT reported]'}"
        )
    if t.truncated:
        lines.append(f"  ... {t.gap_count - len(t.gaps)} more gap(s) not listed")
    if t.duplicate_ids:
        lines.append("  duplicated agg_ids: " + ", ".join(map(str, t.duplicate_ids)))
    b = report.bars
    bars_line = (
        f"bars_1m: {b.bars:,} of {b.minutes:,} minutes ({b.minutes_without_bar:,} without a bar); "
        f"trades per bars {b.bar_trade_count:,}, per trades table {b.trades_in_bar_span:,}"
    )
    lines += ["", bars_line]
    lines += ["", "rows in range:"]
    lines += [f"  {table:<18} {n:>12,}" for table, n in report.counts.items()]
    lines += ["", "freshness (latest row, age at now):"]
    for f in report.freshness:
        lines.append(f"  {f.table:<18} {_iso(f.latest) if f.latest else 'no rows':<26} {_age(f.age_seconds):>10}")
    parked = [d for d in report.default_rows if d.rows]
    lines += ["", "default partitions: " + ("empty" if not parked else "")]
    for d in parked:
        lines.append(f"  {d.table:<18} {d.rows:>12,} rows  {_iso(d.first_time)} .. {_iso(d.last_time)}")
    lines += ["", "RESULT: OK" if report.ok else "RESULT: PROBLEMS"]
    lines += [f"  - {p}" for p in report.problems]
    return "\n".join(lines)
