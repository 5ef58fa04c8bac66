"""The market overview's SQL (the old dashboard's home): symbols by 24 h volume, the funding heatmap,
the signal timeline, the whale radar and the data-quality lights. "24 h" is the day before the newest
stored bar (a replayed session lies in the past), each query bounded by time so partitions are pruned.

The lights: trade-id gaps and book resyncs (both ``data_gaps``, by stream), dead letters, freshness
of each input, and consumer lag (``LagWatch``: asked of the broker in the background, never on a
request). Their limits are the constants below (``docs/how-to/web-ui.md`` lists them).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import psycopg

from tapeflow_ui.queries import EXCHANGE, data_time, ts

WHALE_USD = 100_000.0
#: an input is stale when its newest row is this much older than the newest bar (seconds)
STALE_AFTER_S = {"trades": 120, "depth_snapshots": 120, "mark_prices": 120, "bars_1m": 180, "features": 900}
#: how far back the freshness checks look (a time-bounded scan; older than this is "nothing")
FRESH_WINDOW_S = 1800
#: book resyncs of one symbol in 24 h (md.gaps records of stream md.depth): any is a warning (the stored
#: books, the heatmap and the book detectors had a hole), this many a book that keeps breaking
RESYNC_BAD = 10
#: consumer lag (records behind the end offset, summed over a group's partitions): above WARN a group is
#: falling behind, above BAD it is stuck or far behind; a lag figure older than LAG_STALE_S is not trusted
LAG_WARN = 1_000
LAG_BAD = 10_000
LAG_REFRESH_S = 15.0
LAG_STALE_S = 60.0
LAG_ACTIVE_S = 120.0  # LagWatch asks the broker only while a page asked for the light this recently
#: each input's time column and the key its rows rise along per (exchange, symbol), the columns after
#: those two in its primary key or covering index: the newest row of each symbol is found walking that
#: btree backwards (a few index entries), not by time over the BRIN index, where a range filled since
#: the last VACUUM is not summarized, so "the last 30 min" read every such range (on a day of BTC 55 k
#: trades and a day of evaluations: ~100 and ~70 ms, growing until autovacuum runs). Trade and book ids
#: rise with time, so the newest id in the window is the newest row.
FRESHNESS = {
    "trades": ("trade_time", "agg_id"),
    "depth_snapshots": ("event_time", "last_update_id"),
    "mark_prices": ("event_time", "event_time"),
    "bars_1m": ("close_time", "open_time"),
    "features": ("eval_time", "eval_time"),
}


def market_table(conn: psycopg.Connection, now: datetime) -> list[dict]:
    day = now - timedelta(days=1)
    rows = conn.execute(
        "WITH b AS (SELECT symbol, sum(quote_volume) AS vol, sum(buy_volume - sell_volume) AS cvd, "
        "  (array_agg(close ORDER BY open_time DESC))[1] AS price, (array_agg(open ORDER BY open_time))[1] AS open "
        "  FROM bars_1m WHERE exchange = %(x)s AND open_time >= %(a)s AND open_time < %(b)s GROUP BY symbol), "
        "f AS (SELECT b.symbol, m.funding_rate FROM b CROSS JOIN LATERAL (SELECT funding_rate FROM mark_prices "
        "  WHERE exchange = %(x)s AND symbol = b.symbol AND event_time >= %(a)s AND event_time <= %(b)s "
        "  ORDER BY event_time DESC LIMIT 1) m), "
        "oi AS (SELECT symbol, (array_agg(value ORDER BY event_time DESC))[1] AS last, "
        "  (array_agg(value ORDER BY event_time))[1] AS first FROM market_indicators WHERE exchange = %(x)s "
        "  AND kind = 'open_interest_hist' AND event_time >= %(a)s AND event_time <= %(b)s GROUP BY symbol) "
        "SELECT b.symbol, b.vol, b.price, (b.price / nullif(b.open, 0) - 1), f.funding_rate, "
        "  (oi.last / nullif(oi.first, 0) - 1), b.cvd "
        "FROM b LEFT JOIN f USING (symbol) LEFT JOIN oi USING (symbol) ORDER BY b.vol DESC",
        {"x": EXCHANGE, "a": day, "b": now},
    ).fetchall()
    return [
        {
            "symbol": r[0],
            "volume_usd": r[1],
            "price": r[2],
            "change": r[3],
            "funding": r[4],
            "oi_change": r[5],
            "cvd": r[6],
        }
        for r in rows
    ]


def funding_heatmap(conn: psycopg.Connection, now: datetime, hours: int = 24, symbols: list[str] | None = None) -> dict:
    """Average funding rate per symbol and UTC hour over the ``hours`` before ``now``, for ``symbols``
    (default: those with a bar in that time). Each symbol's hours are averaged along ``mark_prices``'
    key (exchange, symbol, event_time), an index range per hour: grouping the marks by
    ``date_trunc('hour', ...)`` (a time-zone conversion per row) and sorting them took ~0.4 s for a day
    of 1-per-second marks, and a time filter over a month's partition relies on its BRIN index, whose
    ranges filled since the last VACUUM are all read."""
    since = now - timedelta(hours=hours)
    if symbols is None:
        symbols = _bar_symbols(conn, since, now)
    rows = conn.execute(
        "SELECT s.symbol, extract(epoch FROM h.h)::bigint, a.v FROM unnest(%(s)s::text[]) AS s(symbol) "
        "CROSS JOIN generate_series(0, %(n)s) AS k(k) "  # an integer series: its row count is estimated (JIT stays off)
        "CROSS JOIN LATERAL (SELECT date_bin(INTERVAL '1 hour', %(a)s::timestamptz, TIMESTAMPTZ '2000-01-03 00:00:00+00') "
        "  + k.k * INTERVAL '1 hour' AS h) AS h "
        "CROSS JOIN LATERAL (SELECT avg(funding_rate) AS v FROM mark_prices WHERE exchange = %(x)s AND symbol = s.symbol "
        "  AND event_time >= greatest(h.h, %(a)s::timestamptz) AND event_time < h.h + INTERVAL '1 hour' "
        "  AND event_time <= %(b)s) AS a "
        "WHERE a.v IS NOT NULL ORDER BY 1, 2",
        {"s": list(symbols), "x": EXCHANGE, "a": since, "b": now, "n": hours + 1},
    ).fetchall()
    return {"cells": [[r[0], r[1], r[2]] for r in rows]}


def _bar_symbols(conn: psycopg.Connection, since: datetime, now: datetime) -> list[str]:
    return [
        r[0]
        for r in conn.execute(
            "SELECT DISTINCT symbol FROM bars_1m WHERE exchange = %s AND open_time >= %s "
            "AND open_time <= %s ORDER BY 1",
            (EXCHANGE, since, now),
        ).fetchall()
    ]


def signal_timeline(conn: psycopg.Connection, now: datetime, limit: int = 200) -> list[dict]:
    rows = conn.execute(
        "SELECT extract(epoch FROM eval_time)::bigint, symbol, direction, tier, score, price, strategy, signal_id FROM signals "
        "WHERE eval_time >= %s AND eval_time <= %s ORDER BY eval_time DESC LIMIT %s",
        (now - timedelta(days=1), now, limit),
    ).fetchall()
    return [
        {
            "time": r[0],
            "symbol": r[1],
            "direction": r[2],
            "tier": r[3],
            "score": r[4],
            "price": r[5],
            "strategy": r[6],
            "signal_id": r[7],
        }
        for r in rows
    ]


def whale_radar(conn: psycopg.Connection, now: datetime, min_usd: float = WHALE_USD, limit: int = 40) -> list[dict]:
    """The largest trades of the last hour at or above ``min_usd`` notional."""
    rows = conn.execute(
        "SELECT extract(epoch FROM trade_time)::float8, symbol, price, qty, taker_side, price * qty FROM trades "
        "WHERE exchange = %s AND trade_time >= %s AND trade_time <= %s AND price * qty >= %s "
        "ORDER BY price * qty DESC LIMIT %s",
        (EXCHANGE, now - timedelta(hours=1), now, min_usd, limit),
    ).fetchall()
    return [{"time": r[0], "symbol": r[1], "price": r[2], "qty": r[3], "side": r[4], "usd": r[5]} for r in rows]


@dataclass
class LagWatch:
    """Consumer lag of the deployment's groups, asked of the broker in a background thread every
    ``LAG_REFRESH_S`` (the admin calls take a broker round trip per group: never on a page's request),
    and only while someone looks: after ``LAG_ACTIVE_S`` without a ``snapshot()`` it stops asking, and
    the next ``snapshot()`` wakes it. Why: each refresh costs the broker an offsets request per group
    and partition, and nobody needs the light when no page shows it.

    ``fetch`` returns ``[{"group", "state", "members", "total_lag", "partitions"}, ...]`` as
    ``tapeflow topics lag --json`` does (``tapeflow.topic_groups.groups_lag``: injected by the CLI, a
    higher layer). ``snapshot()`` is what the overview shows: the last answer, when it came, and the
    last error."""

    fetch: Callable[[], list[dict]]
    refresh_s: float = LAG_REFRESH_S
    warn: int = LAG_WARN
    bad: int = LAG_BAD
    clock: Callable[[], float] = time.time
    groups: list[dict] | None = None
    fetched_at: float | None = None
    error: str | None = None
    asked_at: float | None = None  # the last ``snapshot()``
    _stop: threading.Event = field(default_factory=threading.Event)
    _wake: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def watched(self) -> bool:
        return self.asked_at is not None and self.clock() - self.asked_at <= LAG_ACTIVE_S

    def refresh(self) -> None:
        try:
            groups = self.fetch()
        except Exception as exc:  # noqa: BLE001 - a broker that does not answer is a light, not a crash
            self.error = f"{type(exc).__name__}: {str(exc)[:200]}"
            return
        self.groups, self.fetched_at, self.error = groups, self.clock(), None

    def start(self) -> None:
        def loop() -> None:
            while not self._stop.is_set():
                if self.watched():
                    self.refresh()
                self._wake.wait(self.refresh_s)
                self._wake.clear()

        self._thread = threading.Thread(target=loop, name="tapeflow-ui-lag", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(15)

    def snapshot(self) -> dict:
        idle = not self.watched()
        self.asked_at = self.clock()
        if idle:
            self._wake.set()  # nobody looked for a while: ask the broker now, not at the next period
        return {
            "groups": self.groups,
            "fetched_at": self.fetched_at,
            "error": self.error,
            "warn": self.warn,
            "bad": self.bad,
        }


def lag_light(snapshot: dict | None, now_s: float) -> dict:
    """The consumer-lag light from a ``LagWatch.snapshot()`` (None: the UI was started without a broker)."""
    link = "/api/quality/lag"
    if snapshot is None:
        return {
            "check": "consumer lag",
            "state": "info",
            "link": None,
            "detail": "no broker configured for the UI: see `tapeflow topics lag`",
        }
    groups, at, error = snapshot["groups"], snapshot["fetched_at"], snapshot["error"]
    if groups is None:
        return {
            "check": "consumer lag",
            "state": "warn" if error is None else "bad",
            "link": link,
            "detail": "asking the broker…" if error is None else f"the broker did not answer: {error}",
        }
    age, warn, bad = now_s - at, snapshot.get("warn", LAG_WARN), snapshot.get("bad", LAG_BAD)
    behind = sorted((g for g in groups if g["total_lag"] > warn), key=lambda g: -g["total_lag"])
    worst = max((g["total_lag"] for g in groups), default=0)
    state = "bad" if worst > bad else "warn" if worst > warn else "ok"
    stale = age > LAG_STALE_S or error is not None
    if stale:
        state = "bad" if state == "bad" else "warn"
    detail = (
        "; ".join(f"{g['group']}: {g['total_lag']:,} behind ({g['state']}, {g['members']} members)" for g in behind[:4])
        or f"{len(groups)} groups, at most {worst:,} records behind"
    )
    if stale:
        detail += f"; figure {age:.0f} s old" + (f" ({error})" if error else "")
    return {"check": "consumer lag", "state": state, "detail": detail, "link": link}


def data_quality(
    conn: psycopg.Connection,
    now: datetime,
    lag: dict | None = None,
    now_s: float | None = None,
    symbols: list[str] | None = None,
) -> list[dict]:
    """One light per check: ok, warn or bad, with what is wrong and where to look. ``symbols``: those
    whose newest rows the freshness lights look up (``FRESHNESS``; default: those with a bar in 24 h)."""
    lights = []
    day = now - timedelta(days=1)
    gaps = conn.execute(
        "SELECT symbol, stream, count(*), sum(to_id - from_id + 1) FROM data_gaps "
        "WHERE detected_time >= %s GROUP BY 1, 2 ORDER BY 1, 2",
        (day,),
    ).fetchall()
    trade_gaps = [g for g in gaps if g[1] != "md.depth"]
    lights.append(
        {
            "check": "gaps",
            "state": "bad" if trade_gaps else "ok",
            "detail": "; ".join(f"{s} {st}: {n} holes, {ids} ids" for s, st, n, ids in trade_gaps)
            or "no trade-id holes given up in 24 h",
            "link": "/api/quality/gaps?stream=md.trades",
        }
    )
    resyncs = sorted(((s, n) for s, st, n, _ in gaps if st == "md.depth"), key=lambda r: (-r[1], r[0]))
    worst = max((n for _, n in resyncs), default=0)
    lights.append(
        {
            "check": "book resyncs",
            "state": "bad" if worst >= RESYNC_BAD else "warn" if worst else "ok",
            "detail": "; ".join(f"{s}: {n} resync{'' if n == 1 else 's'}" for s, n in resyncs[:6])
            or "no order book broke in 24 h",
            "link": "/api/quality/gaps?stream=md.depth",
        }
    )
    errors = conn.execute("SELECT count(*) FROM pipeline_errors WHERE event_time >= %s", (day,)).fetchone()[0]
    lights.append(
        {
            "check": "dead letters",
            "state": "bad" if errors else "ok",
            "detail": f"{errors} records no stage could process in 24 h (pipeline_errors)",
            "link": "/api/quality/errors",
        }
    )
    if symbols is None:
        symbols = _bar_symbols(conn, day, now)
    since = now - timedelta(seconds=FRESH_WINDOW_S)
    for table, (column, key) in FRESHNESS.items():
        newest = conn.execute(
            f"SELECT max(n.t) FROM unnest(%(s)s::text[]) AS s(symbol) CROSS JOIN LATERAL (SELECT {column} AS t "  # nosec B608 # fixed table and column names
            f"FROM {table} WHERE exchange = %(x)s AND symbol = s.symbol AND {column} >= %(a)s AND {column} <= %(b)s "
            f"ORDER BY {key} DESC LIMIT 1) AS n",
            {"s": list(symbols), "x": EXCHANGE, "a": since, "b": now},
        ).fetchone()[0]
        age = None if newest is None else (now - newest).total_seconds()
        state = "bad" if age is None else "warn" if age > STALE_AFTER_S[table] else "ok"
        lights.append(
            {
                "check": f"{table} fresh",
                "state": state,
                "detail": f"nothing in the {FRESH_WINDOW_S // 60} min before the newest bar"
                if age is None
                else f"newest row {age:.0f} s before the newest bar",
                "link": None,
            }
        )
    lights.append(lag_light(lag, time.time() if now_s is None else now_s))
    return lights


def overview(conn: psycopg.Connection, lag: dict | None = None) -> dict:
    now = data_time(conn)
    if now is None:
        return {"now": None, "market": [], "funding": {"cells": []}, "signals": [], "whales": [], "quality": []}
    market = market_table(conn, now)
    symbols = [r["symbol"] for r in market]  # those with a bar in the 24 h
    return {
        "now": ts(now),
        "market": market,
        "funding": funding_heatmap(conn, now, symbols=symbols),
        "signals": signal_timeline(conn, now),
        "whales": whale_radar(conn, now),
        "quality": data_quality(conn, now, lag, symbols=symbols),
    }
