"""Outcome labels in PostgreSQL: read the samples of a window, their fills, the prices at their horizon
ends and the funding settlements, compute with ``review.labels`` and upsert into ``outcome_labels``.

Reads per chunk of t0 (a day): the signals and the executor mode's ``opened`` positions with t0 in
it, then per market one query for the fills, two for the prices (for every horizon end the trade at
or before it, then the trade at or after the ends that those do not show reached, each within
``PRICE_LOOKBACK_MS``: exactly what ``PricePath`` answers from) and two small reads per funding
settlement of the window (the funding time the next mark announces, the newest mark before it),
never one per sample. Each price lookup reads the minute next to the horizon end first (one range of
the BRIN index on trade_time, about 10^4 rows) and the hour only when that minute has no trade:
benchmarks/bench_labels.py: a backfill labels 66-91 rows/s and the hourly pass takes 14 s (target 36 s)
on 4 symbols at 12 signals/h each, 3 days of 6 M trades, on a 2-core machine at load 6-7.
Writing is an upsert on the table's key, so a recompute replaces a row and running twice
leaves the same rows; the hourly job (``run_due``) also skips the (sample, horizon) rows already
there, so its second run writes nothing.

``run_due`` is what the running stack calls hourly (``tapeflow labels serve``): per source (the
executor mode) from its watermark (``outcome_label_progress``; the first run starts at the oldest
signal) minus the longest horizon and a day of margin for late data, up to ``now``; then the
watermark moves to ``now``. A sample whose price data did not reach its horizon end is retried by
every run whose window still covers it, and by ``tapeflow labels backfill``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
import structlog
from psycopg.rows import dict_row

from execution.config import ExecutorConfig
from review.labels import (
    HOUR_MS,
    PRICE_LOOKBACK_MS,
    LabelParams,
    OutcomeLabel,
    PricePath,
    Sample,
    label_sample,
    samples_from_records,
    settlements_from_marks,
)

if TYPE_CHECKING:
    from stream_apps.core.strategy import StrategyConfig

log = structlog.get_logger("labels")

DAY_MS = 86_400_000
LATE_DATA_MARGIN_MS = DAY_MS  # the hourly job looks this far before its window again (late rows)
FILL_LEAD_MS = HOUR_MS  # entry fills of a sample may come this long before its t0 window's start
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

COLUMNS = (
    "source",
    "sample_kind",
    "sample_id",
    "horizon_h",
    "strategy",
    "config_hash",
    "config_rev",
    "exchange",
    "symbol",
    "direction",
    "taken",
    "position_id",
    "t0",
    "horizon_time",
    "price_at_horizon",
    "qty_open",
    "realized_pnl",
    "unrealized_pnl",
    "gross_pnl",
    "fees",
    "funding",
    "net_pnl",
    "basis",
    "net_roi",
    "threshold",
    "label",
    "computed_at",
)
_KEY = ("source", "sample_kind", "sample_id", "horizon_h")
UPSERT = (
    f"INSERT INTO outcome_labels ({', '.join(COLUMNS)}) VALUES ({', '.join(['%s'] * len(COLUMNS))}) "  # nosec B608 # this module's constant column names; values are bound
    f"ON CONFLICT ({', '.join(_KEY)}) DO UPDATE SET "
    + ", ".join(f"{c} = EXCLUDED.{c}" for c in COLUMNS if c not in _KEY)
)


def ts(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)


def ms(dt: datetime) -> int:
    return (dt - _EPOCH) // timedelta(milliseconds=1)


def label_row(source: str, lab: OutcomeLabel, computed_at_ms: int) -> tuple[Any, ...]:
    """One ``outcome_labels`` row, in ``COLUMNS`` order."""
    return (
        source,
        lab.kind,
        lab.sample_id,
        lab.horizon_h,
        lab.strategy,
        lab.config_hash,
        lab.config_rev,
        lab.exchange,
        lab.symbol,
        lab.direction,
        lab.taken,
        lab.position_id,
        ts(lab.t0_ms),
        ts(lab.t0_ms + lab.horizon_h * HOUR_MS),
        lab.price_at_horizon,
        lab.qty_open,
        lab.realized_pnl,
        lab.unrealized_pnl,
        lab.gross_pnl,
        lab.fees,
        lab.funding,
        lab.net_pnl,
        lab.basis,
        lab.net_roi,
        lab.threshold,
        lab.label,
        ts(computed_at_ms),
    )


def label_record(source: str, lab: OutcomeLabel, computed_at_ms: int) -> dict[str, Any]:
    """The outcome.labels record of a row (``schemas/avro/outcome_label.avsc``)."""
    return {
        "source": source,
        "sample_kind": lab.kind,
        "sample_id": lab.sample_id,
        "horizon_h": lab.horizon_h,
        "strategy": lab.strategy,
        "config_hash": lab.config_hash,
        "config_rev": lab.config_rev,
        "exchange": lab.exchange,
        "symbol": lab.symbol,
        "direction": lab.direction,
        "taken": lab.taken,
        "position_id": lab.position_id,
        "t0": lab.t0_ms,
        "price_at_horizon": lab.price_at_horizon,
        "qty_open": lab.qty_open,
        "realized_pnl": lab.realized_pnl,
        "unrealized_pnl": lab.unrealized_pnl,
        "fees": lab.fees,
        "funding": lab.funding,
        "net_pnl": lab.net_pnl,
        "basis": lab.basis,
        "net_roi": lab.net_roi,
        "threshold": lab.threshold,
        "label": lab.label,
        "computed_at": computed_at_ms,
    }


def label_key(source: str, lab: OutcomeLabel) -> str:
    """The outcome.labels key: the table's key, so the compacted topic keeps what the table keeps."""
    return f"{source}:{lab.kind}:{lab.sample_id}:{lab.horizon_h}"


Written = Callable[[str, list[OutcomeLabel]], None]  # (source, labels) after their transaction committed


def upsert_labels(conn: psycopg.Connection, source: str, labels: Sequence[OutcomeLabel], now_ms: int) -> int:
    with conn.cursor() as cur:
        cur.executemany(UPSERT, [label_row(source, lab, now_ms) for lab in labels])
    return len(labels)


@dataclass
class WindowResult:
    samples: int = 0
    written: int = 0
    pending: int = 0  # (sample, horizon) pairs due but without price data reaching the horizon end
    stopped: bool = False  # ended early on request


# ------------------------------------------------------------------------------------------ reading
def _with_ms(rows: Iterable[dict[str, Any]], *fields: str) -> list[dict[str, Any]]:
    out = []
    for r in rows:
        for f in fields:
            r[f] = ms(r[f])
        out.append(r)
    return out


# %(strategy)s: --strategy, when given
_SIGNALS = (
    "SELECT signal_id, strategy, config_hash, coalesce(config_rev, 0) AS config_rev, exchange, symbol, direction, tier, price, risk_distance, factors, "
    "eval_time FROM signals WHERE eval_time >= %(lo)s AND eval_time < %(hi)s "
    "AND (%(strategy)s::text IS NULL OR strategy = %(strategy)s)"
)
_OPENED = (
    "SELECT position_id, signal_id, strategy, config_hash, coalesce(config_rev, 0) AS config_rev, exchange, symbol, direction, event_time "
    "FROM positions WHERE mode = %(mode)s AND event = 'opened' "
    "AND ((event_time >= %(lo)s AND event_time < %(hi)s) OR signal_id = ANY(%(ids)s)) "
    "AND (%(strategy)s::text IS NULL OR strategy = %(strategy)s)"
)


def read_samples(
    conn: psycopg.Connection,
    mode: str,
    from_ms: int,
    to_ms: int,
    config: ExecutorConfig,
    params: LabelParams,
    strategy: str | None = None,
) -> list[Sample]:
    """The signals with eval_time and the mode's positions with entry time in ``[from_ms, to_ms)``."""
    args = {"lo": ts(from_ms), "hi": ts(to_ms), "mode": mode, "strategy": strategy}
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            _SIGNALS,
            args,
        )
        signals = _with_ms(cur.fetchall(), "eval_time")
        args["ids"] = [s["signal_id"] for s in signals]
        cur.execute(
            _OPENED,
            args,
        )
        opened = _with_ms(cur.fetchall(), "event_time")
        markets = sorted({(r["exchange"], r["symbol"]) for r in [*signals, *opened]})
        fills: list[dict[str, Any]] = []
        for exchange, symbol in markets:
            cur.execute(
                "SELECT client_order_id, side, price, qty, fee, event_time FROM fills WHERE mode = %s "
                "AND exchange = %s AND symbol = %s AND event_time >= %s AND event_time <= %s",
                (mode, exchange, symbol, ts(from_ms - FILL_LEAD_MS), ts(to_ms + params.max_horizon_ms)),
            )
            fills += _with_ms(cur.fetchall(), "event_time")
    samples = samples_from_records(signals, opened, fills, config)
    return [s for s in samples if from_ms <= s.t0_ms < to_ms]


# The trade nearest each horizon end on one side, looked for within a minute first (one range of the
# BRIN index on trade_time) and within the lookback only when that minute has none: the first branch
# of the UNION ALL that finds one ends the search.
_BEFORE = """
SELECT b.trade_time, b.agg_id, b.price FROM unnest(%(ends)s::timestamptz[]) AS q(t)
JOIN LATERAL (
    (SELECT trade_time, agg_id, price FROM trades
     WHERE exchange = %(exchange)s AND symbol = %(symbol)s AND trade_time <= q.t AND trade_time >= q.t - %(near)s
     ORDER BY trade_time DESC, agg_id DESC LIMIT 1)
    UNION ALL
    (SELECT trade_time, agg_id, price FROM trades
     WHERE exchange = %(exchange)s AND symbol = %(symbol)s AND trade_time <= q.t AND trade_time >= q.t - %(back)s
     ORDER BY trade_time DESC, agg_id DESC LIMIT 1)
    LIMIT 1) b ON true
"""
_AFTER = """
SELECT a.trade_time, a.agg_id, a.price FROM unnest(%(ends)s::timestamptz[]) AS q(t)
JOIN LATERAL (
    (SELECT trade_time, agg_id, price FROM trades
     WHERE exchange = %(exchange)s AND symbol = %(symbol)s AND trade_time >= q.t AND trade_time < q.t + %(near)s
     ORDER BY trade_time, agg_id LIMIT 1)
    UNION ALL
    (SELECT trade_time, agg_id, price FROM trades
     WHERE exchange = %(exchange)s AND symbol = %(symbol)s AND trade_time >= q.t AND trade_time < q.t + %(back)s
     ORDER BY trade_time, agg_id LIMIT 1)
    LIMIT 1) a ON true
"""

# the first mark at or after a time (what it announces is the next funding time), and the newest mark
# before a funding time that announced it: each within a minute first, then within a day
_NEXT_MARK = (
    "(SELECT next_funding_time FROM mark_prices WHERE exchange = %(exchange)s AND symbol = %(symbol)s "
    "AND next_funding_time > %(t)s AND event_time >= %(t)s AND event_time < %(t)s + {span} "
    "ORDER BY event_time LIMIT 1)"
)
_SETTLING_MARK = (
    "(SELECT event_time, funding_rate, mark_price FROM mark_prices WHERE exchange = %(exchange)s "
    "AND symbol = %(symbol)s AND next_funding_time = %(t)s AND event_time < %(t)s "
    "AND event_time >= %(t)s - {span} ORDER BY event_time DESC LIMIT 1)"
)


def _first_of(template: str) -> str:
    minute, day = "interval '1 minute'", "interval '1 day'"
    return f"{template.format(span=minute)} UNION ALL {template.format(span=day)} LIMIT 1"


def read_prices(conn: psycopg.Connection, exchange: str, symbol: str, ends_ms: Iterable[int]) -> PricePath:
    """The trades ``PricePath`` needs for these horizon ends: for each, the last trade at or before it
    and the first at or after it, each within ``PRICE_LOOKBACK_MS``. Two queries: the trades before
    every end, then the trades after the ends those do not already show to be reached (a later end's
    trade before it often lies in the hour after an earlier end)."""
    ends = sorted(set(ends_ms))
    points: dict[int, tuple[int, float]] = {}  # agg_id -> (time, price)
    args: dict[str, Any] = {
        "exchange": exchange,
        "symbol": symbol,
        "near": timedelta(minutes=1),
        "back": timedelta(milliseconds=PRICE_LOOKBACK_MS),
    }

    def fetch(query: str, at: list[int]) -> None:
        if at:
            with conn.cursor() as cur:
                cur.execute(query, args | {"ends": [ts(t) for t in at]})
                for t, agg, price in cur.fetchall():
                    points[agg] = (ms(t), price)

    fetch(_BEFORE, ends)
    known = PricePath(*_columns(points))
    fetch(_AFTER, [t for t in ends if not known.reaches(t)])
    return PricePath(*_columns(points))


def _columns(points: Mapping[int, tuple[int, float]]) -> tuple[list[int], list[float]]:
    ordered = sorted((t, agg, p) for agg, (t, p) in points.items())
    return [t for t, _, _ in ordered], [p for _, _, p in ordered]


def read_settlements(conn: psycopg.Connection, exchange: str, symbol: str, after_ms: int, to_ms: int) -> list:
    """Settlements with a funding time in ``(after_ms, to_ms]``: from ``after_ms``, the funding time the
    next mark announces, the newest mark before it that announced it, then on from that funding time;
    two small reads per settlement instead of every mark of the window (one a second)."""
    marks: list[dict[str, Any]] = []
    args: dict[str, Any] = {"exchange": exchange, "symbol": symbol}
    t = after_ms
    with conn.cursor() as cur:
        while t <= to_ms:
            cur.execute(_first_of(_NEXT_MARK), args | {"t": ts(t)})  # nosec B608 # this module's constant SQL
            row = cur.fetchone()
            if row is None:
                break
            f = ms(row[0])  # > t: the query asks for a later funding time than the one just settled
            if f > to_ms:
                break
            cur.execute(_first_of(_SETTLING_MARK), args | {"t": row[0]})
            mark = cur.fetchone()
            if mark is not None:
                marks.append(
                    {"next_funding_time": f, "event_time": ms(mark[0]), "funding_rate": mark[1], "mark_price": mark[2]}
                )
            t = f
    return settlements_from_marks(marks)


def existing_keys(conn: psycopg.Connection, source: str, from_ms: int, to_ms: int) -> set[tuple[str, str, int]]:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT sample_kind, sample_id, horizon_h FROM outcome_labels WHERE source = %s AND t0 >= %s AND t0 < %s",
            (source, ts(from_ms), ts(to_ms)),
        )
        return {(k, i, int(h)) for k, i, h in cur.fetchall()}


# ------------------------------------------------------------------------------------------ labelling
def label_window(
    conn: psycopg.Connection,
    mode: str,
    from_ms: int,
    to_ms: int,
    *,
    params: LabelParams,
    config: ExecutorConfig,
    now_ms: int,
    strategy: str | None = None,
    skip_existing: bool = False,
    on_written: Written | None = None,
) -> WindowResult:
    """Label the samples of mode ``mode`` with t0 in ``[from_ms, to_ms)`` and upsert them (source =
    ``mode``) in one transaction; ``skip_existing``: leave (sample, horizon) rows already there;
    ``on_written(mode, labels)`` once they are committed."""
    result = WindowResult()
    with conn.transaction():
        samples = read_samples(conn, mode, from_ms, to_ms, config, params, strategy)
        done = existing_keys(conn, mode, from_ms, to_ms) if skip_existing else set()
        due: dict[tuple[str, str], list[tuple[Sample, int]]] = {}
        for s in samples:
            for h in params.horizons_h:
                if s.t0_ms + h * HOUR_MS <= now_ms and (s.kind, s.sample_id, h) not in done:
                    due.setdefault(s.market, []).append((s, h))
        result.samples = len(samples)
        labels: list[OutcomeLabel] = []
        for (exchange, symbol), items in sorted(due.items()):
            ends = [s.t0_ms + h * HOUR_MS for s, h in items]
            prices = read_prices(conn, exchange, symbol, ends)
            settlements = read_settlements(conn, exchange, symbol, min(s.t0_ms for s, _ in items), max(ends))
            for s, h in items:
                lab = label_sample(s, h, prices, settlements, params, now_ms)
                if lab is None:
                    result.pending += 1
                else:
                    labels.append(lab)
        result.written = upsert_labels(conn, mode, labels, now_ms)
    if on_written is not None and labels:
        on_written(mode, labels)
    return result


def label_range(
    conninfo: str,
    modes: Sequence[str],
    from_ms: int,
    to_ms: int,
    *,
    params: LabelParams,
    config: ExecutorConfig,
    now_ms: int,
    strategy: str | None = None,
    skip_existing: bool = False,
    progress: Callable[[str, int, WindowResult], None] | None = None,
    stop: Callable[[], bool] | None = None,
    on_written: Written | None = None,
) -> WindowResult:
    """``label_window`` over ``[from_ms, to_ms)`` a day of t0 at a time, for every mode; ``progress(mode,
    chunk end, chunk result)`` after each chunk. ``stop()`` true between chunks ends it early (each
    chunk is its own transaction: what is written stays); the result is then marked ``stopped``."""
    total = WindowResult()
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for mode in modes:
            lo = from_ms
            while lo < to_ms:
                if stop is not None and stop():
                    total.stopped = True
                    return total
                hi = min(lo + DAY_MS, to_ms)
                r = label_window(
                    conn,
                    mode,
                    lo,
                    hi,
                    params=params,
                    config=config,
                    now_ms=now_ms,
                    strategy=strategy,
                    skip_existing=skip_existing,
                    on_written=on_written,
                )
                total.samples += r.samples
                total.written += r.written
                total.pending += r.pending
                if progress is not None:
                    progress(mode, hi, r)
                lo = hi
    return total


def oldest_sample_ms(conn: psycopg.Connection, mode: str) -> int | None:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT least((SELECT min(eval_time) FROM signals), "
            "(SELECT min(event_time) FROM positions WHERE mode = %s AND event = 'opened'))",
            (mode,),
        )
        row = cur.fetchone()
    return None if row is None or row[0] is None else ms(row[0])


def run_due(
    conninfo: str,
    modes: Sequence[str],
    *,
    params: LabelParams,
    config: ExecutorConfig,
    now_ms: int,
    stop: Callable[[], bool] | None = None,
    on_written: Written | None = None,
) -> dict[str, WindowResult]:
    """One run of the hourly job (module docstring): label what matured since each mode's watermark.
    ``stop()`` (the service stopping) ends it between chunks, the watermark left where it was."""
    results: dict[str, WindowResult] = {}
    for mode in modes:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            with conn.cursor() as cur:
                cur.execute("SELECT labelled_to FROM outcome_label_progress WHERE source = %s", (mode,))
                row = cur.fetchone()
            if row is not None:
                start = ms(row[0]) - params.max_horizon_ms - LATE_DATA_MARGIN_MS
            else:
                start = oldest_sample_ms(conn, mode) or now_ms
        end = now_ms - min(params.horizons_h) * HOUR_MS + 1  # t0 whose shortest horizon has ended
        results[mode] = label_range(
            conninfo,
            [mode],
            start,
            max(start, end),
            params=params,
            config=config,
            now_ms=now_ms,
            skip_existing=True,
            stop=stop,
            on_written=on_written,
        )
        if results[mode].stopped:
            break
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO outcome_label_progress (source, labelled_to, updated_at) VALUES (%s, %s, %s) "
                "ON CONFLICT (source) DO UPDATE SET labelled_to = EXCLUDED.labelled_to, updated_at = EXCLUDED.updated_at",
                (mode, ts(now_ms), ts(now_ms)),
            )
    return results


def labels_of(conninfo: str, sample_id: str) -> list[dict[str, Any]]:
    """Every label row of a signal or position id (a signal's and, for a position, its trade's)."""
    with psycopg.connect(conninfo) as conn, conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT * FROM outcome_labels WHERE sample_id = %s OR position_id = %s "
            "ORDER BY source, sample_kind, horizon_h",
            (sample_id, sample_id),
        )
        return list(cur.fetchall())


#: per strategy its latest rollout step: its active revision is to_rev, or from_rev during a canary
_LATEST_STEPS = """
SELECT DISTINCT ON (a.strategy) a.strategy, a.action, a.from_rev, a.to_rev
FROM strategy_rollouts_audit a
WHERE a.action IN ('promote', 'canary', 'finish', 'rollback', 'auto_rollback')
ORDER BY a.strategy, a.id DESC
"""


def active_contents(conn: psycopg.Connection, files: Mapping[str, Path]) -> dict[str, str]:
    """The text of each strategy's active revision: the one its latest rollout step made active
    (``strategy_rollouts_audit``, ``strategy_revisions``), else the file the stack started on (``files``,
    by strategy name)."""
    with conn.cursor() as cur:
        cur.execute(_LATEST_STEPS)
        steps = {str(r[0]): r[2] if r[1] == "canary" else r[3] for r in cur.fetchall()}
        cur.execute("SELECT name, rev, content FROM strategy_revisions WHERE name = ANY(%s)", (list(steps),))
        texts = {str(name): str(content) for name, rev, content in cur.fetchall() if steps[name] == rev}
    for name, path in files.items():
        if name not in texts:
            texts[name] = path.read_text(encoding="utf-8")
    return texts


def config_thresholds(configs: Iterable[StrategyConfig]) -> dict[str, float]:
    """Per strategy, the label threshold its config sets (``labels.roi_threshold``); the backtest labels
    its run's strategies by them, as the stack labels the running ones (``strategy_thresholds``)."""
    return {cfg.name: cfg.labels.roi_threshold for cfg in configs if cfg.labels is not None}


def strategy_thresholds(conn: psycopg.Connection, files: Mapping[str, Path]) -> dict[str, float]:
    """Per strategy, the label threshold (a fraction) its active revision's file sets (``labels:
    {roi_threshold: 0.005}``); a strategy whose file sets none is left out (the default applies), and so
    is one whose text does not parse (logged: labels must not stop on it)."""
    from stream_apps.core.rollout import parse_content
    from stream_apps.core.strategy import StrategyConfigError

    configs: list[StrategyConfig] = []
    for name, text in sorted(active_contents(conn, files).items()):
        try:
            configs.append(parse_content(text, f"{name} (active revision)"))
        except StrategyConfigError as exc:
            log.warning("labels: a strategy file does not parse", strategy=name, error=str(exc).splitlines()[0])
    return config_thresholds(configs)


def with_strategy_thresholds(conninfo: str, params: LabelParams, files: Mapping[str, Path]) -> LabelParams:
    """``params`` with each strategy's threshold from its active revision's file (``strategy_thresholds``)
    where ``params.thresholds`` (what the operator gave: ``--strategy-threshold``) names none."""
    with psycopg.connect(conninfo) as conn:
        from_files = strategy_thresholds(conn, files)
    return replace(params, thresholds={**from_files, **params.thresholds})


def thresholds_from(pairs: Mapping[str, float]) -> dict[str, float]:
    """Per-strategy thresholds given in percent (``{"s": 0.8}``) as fractions."""
    return {k: v / 100 for k, v in pairs.items()}
