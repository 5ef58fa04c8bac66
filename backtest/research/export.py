"""Training data export: every evaluation of one strategy, its features, decision and research labels,
as Parquet per UTC day, with the schema written beside the files (``tapeflow research export``).

Why: models are fitted outside tapeflow (pandas, polars, DuckDB, Spark). ``research labels`` writes one
file for a whole range and keeps it in memory; a month of history needs files that are written as the
replay goes, that a second run can skip, and whose columns are the same every day.

Same numbers as research: the engine runs per symbol over a backtest source exactly as ``research
labels`` runs it (``replay_symbol``: same engine, replay state parameters, inputs as the backtest runner
gives them), the rows are ``dataset.evaluation_columns`` (every input of the engine's feature records:
a field added to ``Features`` becomes a column by itself) and the labels ``labels.label_columns`` (the
price path of a day is the trades up to an hour after it, which gives the labels of the whole range's
path: see ``_day_path``).

Layout: ``<out>/<strategy>/date=YYYY-MM-DD/<SYMBOL>.parquet`` (Hive-style: pyarrow, pandas, polars and
DuckDB read ``<out>/<strategy>`` as one dataset with a ``date`` partition column) and
``<out>/<strategy>/_schema.json`` (every column's name, Arrow type, unit and meaning, from
``export_columns``: the files are built from the same list and a row set that differs from it fails, so
the two cannot drift). Rows are in evaluation time order. A day without any evaluation (no data) gets
no file, so a later run tries it again.

Resumable: a file is written to a hidden temporary name in its day folder and renamed when complete
(readers skip names starting with ``.``; a crash leaves at most such a temporary file, removed by the
next run), so a file under its own name is a whole day. Each file carries its provenance in the Parquet
key-value metadata (``tapeflow.export``: format, config hash, source, replay start); a run skips a day
whose file has this run's columns, strategy configuration and source and was replayed from this run's
``--from`` or earlier (at least as much warm-up), rewrites any other (``overwrite``: all), and stops its
replay after the last day it still has to write. The replay always starts at ``--from``: a day's rows
depend on the state the engine built before it. It reads the source an hour past ``--to`` (where the
source has data), so the last day's labels see their hour like every other day's and a day's file does
not depend on where the range ended.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from stream_apps.core.detectors import DETECTOR_FIELDS
from stream_apps.core.features import Features
from stream_apps.core.frame import SCALAR_FIELDS, duration_name
from stream_apps.core.records import FeatureBlock
from stream_apps.core.scoring import BLOCK_REASONS, GATES, LAYER_ORDER
from stream_apps.core.strategy import StrategyConfig

from .dataset import evaluation_columns
from .labels import BARRIER_HORIZON_MS, HORIZONS_MS, STOP_ATR, TARGET_ATR, PricePath, label_columns

DAY_MS = 86_400_000
FORMAT = "tapeflow-training-export/1"
SCHEMA_FILE = "_schema.json"
METADATA_KEY = b"tapeflow.export"

# unit and meaning of the engine's features (``stream_apps.core.features.Features``). A field added there
# is exported without an entry here (type from its annotation, meaning pointing at Features): add one.
FEATURE_DOCS: dict[str, tuple[str, str]] = {
    "last_price": ("quote currency", "price of the last trade before eval_time (the labels' entry price)"),
    "last_trade_ms": ("ms since 1970 UTC", "time of the last trade before eval_time"),
    "coverage_start_ms": ("ms since 1970 UTC", "start of the uninterrupted trade data that reaches eval_time"),
    "approx_until_ms": (
        "ms since 1970 UTC",
        "a warm start's minute bars stood in for trades before this (size "
        "quantiles and large/whale flows from the trades after); empty: none",
    ),
    "vwap_30m": ("quote currency", "30-minute VWAP minus last_price (the confirmation layer's term)"),
    "volume_30m": ("base quantity", "traded quantity over the last 30 minutes"),
    "atr": ("quote currency", "average true range of the strategy's bars (the labels' barrier unit)"),
    "atr_percentile": ("percentile 0-100", "ATR's percentile among its recent values"),
    "atr_bars": ("bars", "bars the ATR has seen"),
    "p95_qty": ("base quantity", "95th percentile of trade size (large-trade threshold)"),
    "p99_qty": ("base quantity", "99th percentile of trade size (whale threshold)"),
    "qty_samples": ("trades", "trades behind the size percentiles"),
    "large_buy_qty_15m": ("base quantity", "taker-bought quantity of large trades over 15 minutes"),
    "large_sell_qty_15m": ("base quantity", "taker-sold quantity of large trades over 15 minutes"),
    "whale_buy_usd_15m": ("quote currency", "taker-bought notional of whale trades over 15 minutes"),
    "whale_sell_usd_15m": ("quote currency", "taker-sold notional of whale trades over 15 minutes"),
    "whale_ratio_15m": ("ratio", "whale buy notional / whale sell notional over 15 minutes"),
    "obi": ("ratio -1..1", "order-book imbalance of the latest depth snapshot"),
    "mark_price": ("quote currency", "latest mark price"),
    "index_price": ("quote currency", "latest index price"),
    "funding_rate": ("rate per funding interval", "latest funding rate"),
    "open_interest": ("base quantity", "latest open interest"),
    "oi_change": ("fraction", "relative change of open interest over the indicator window"),
    "long_short_ratio": ("ratio", "global long/short account ratio"),
    "top_trader_long_share": ("fraction 0-1", "long share of top traders' positions"),
    "taker_buy_sell_ratio": ("ratio", "taker buy volume / taker sell volume"),
    "coinbase_premium": ("fraction", "Coinbase spot price premium over the Binance price"),
    "spot_perp_divergence": ("fraction", "(mark - spot mid) / spot mid"),
    "liq_long_usd_5m": ("quote currency", "long liquidations over 5 minutes (a lower bound)"),
    "liq_short_usd_5m": ("quote currency", "short liquidations over 5 minutes (a lower bound)"),
    "vpin": ("probability 0-1", "VPIN over the strategy's volume buckets (detectors section)"),
    "kyle_lambda": ("quote currency per base unit", "Kyle's lambda: OLS price impact of signed volume per bar"),
    "amihud": ("return per million quote", "Amihud illiquidity: mean |return| / quote volume per bar x 1e6"),
    "cvd_divergence": ("-1/0/+1", "CVD-price divergence of the last closed bar: -1 bearish, +1 bullish, 0 none"),
    "cvd_divergence_price": ("fraction", "how far price made its new high/low beyond the reference bars"),
    "cvd_divergence_cvd": ("base quantity", "how far CVD stayed short of its reference high/low"),
    "oi_change_5m": ("fraction", "relative open-interest change between consecutive periods (detectors)"),
    "oi_spike_z": ("z-score", "oi_change_5m against the mean and deviation of the previous changes"),
    "liq_long_count": ("liquidations", "long liquidations in the detectors' window (a lower bound)"),
    "liq_short_count": ("liquidations", "short liquidations in the detectors' window (a lower bound)"),
    "liq_long_usd": ("quote currency", "long liquidations' notional in the detectors' window (a lower bound)"),
    "liq_short_usd": ("quote currency", "short liquidations' notional in the detectors' window (a lower bound)"),
    "liq_cascade_long": ("0/1", "1 when long liquidations reached the cascade threshold"),
    "liq_cascade_short": ("0/1", "1 when short liquidations reached the cascade threshold"),
    "wall_bid_distance_bps": ("bps", "distance from mid of the nearest bid wall (level >= k x median depth)"),
    "wall_bid_usd": ("quote currency", "size of the nearest bid wall"),
    "wall_bid_age_s": ("seconds", "how long the nearest bid wall has stood at its price"),
    "wall_ask_distance_bps": ("bps", "distance from mid of the nearest ask wall (level >= k x median depth)"),
    "wall_ask_usd": ("quote currency", "size of the nearest ask wall"),
    "wall_ask_age_s": ("seconds", "how long the nearest ask wall has stood at its price"),
    "wall_pulled_bid": ("walls", "bid walls that vanished without trades consuming them, in the walls window"),
    "wall_pulled_ask": ("walls", "ask walls that vanished without trades consuming them, in the walls window"),
    "wall_filled_bid": ("walls", "bid walls traded through, in the walls window"),
    "wall_filled_ask": ("walls", "ask walls traded through, in the walls window"),
    "iceberg_refills_bid": ("refills", "refills at bid prices refilled >= N times within the icebergs window"),
    "iceberg_refills_ask": ("refills", "refills at ask prices refilled >= N times within the icebergs window"),
    "iceberg_usd_bid": ("quote currency", "notional traded into the bid iceberg refills"),
    "iceberg_usd_ask": ("quote currency", "notional traded into the ask iceberg refills"),
}
_STRATEGY_INPUT_DOCS = {
    "cvd_fast": ("base quantity", "CVD over the strategy's cvd_fast window"),
    "cvd_mid": ("base quantity", "CVD over the strategy's cvd_mid window"),
    "cvd_fast_slope": ("base quantity", "slope of the cvd_fast CVD"),
    "cvd_fast_accel": ("base quantity", "acceleration of the cvd_fast CVD"),
    "large_net_qty_15m": ("base quantity", "large_buy_qty_15m - large_sell_qty_15m"),
}
# integer fields of Features (``int`` / ``int | None``) are int64 columns, every other number float64
_INT_FIELDS = frozenset(f.name for f in fields(Features) if str(f.type).split("|")[0].strip() == "int")


class ExportError(ValueError):
    """An export that cannot run as asked (one line: the CLI shows it as ``error: ...``)."""


@dataclass(frozen=True)
class Column:
    name: str
    type: pa.DataType
    unit: str
    meaning: str

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "type": str(self.type), "unit": self.unit, "meaning": self.meaning}


def feature_windows(cfg: StrategyConfig) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The CVD windows and the slope/acceleration windows the engine computes for ``cfg`` alone."""
    from stream_apps.core.engine import Engine

    engine = Engine([cfg])
    return engine._cvd_windows, engine._slope_windows  # noqa: SLF001 - the engine's own choice, not a copy


def _detectors_off(cfg: StrategyConfig, name: str) -> bool:
    return name in DETECTOR_FIELDS and cfg.detectors is None


def export_columns(cfg: StrategyConfig) -> list[Column]:
    """Every column of the export of ``cfg``, in file order (``dataset.evaluation_columns``' order, then
    the labels): the one list the files and ``_schema.json`` are made from."""
    text, f64 = pa.string(), pa.float64()
    cols = [
        Column("evaluation_id", text, "", "strategy:config_hash:exchange:symbol:eval_time (ms), the key of `features`"),
        Column("strategy", text, "", "strategy name"),
        Column("strategy_version", text, "", "strategy version"),
        Column("config_hash", text, "", "hash of the strategy configuration"),
        Column("exchange", text, "", "venue"),
        Column("symbol", text, "", "contract, e.g. BTCUSDT"),
        Column("eval_time", pa.timestamp("ms", tz="UTC"), "UTC", "evaluation time (the features use data before it)"),
        Column("direction", text, "", "LONG, SHORT or null (no direction)"),
        Column("score", f64, "points", "final score"),
        Column("raw_score", f64, "points", "score before normalisation to the layers' maximum"),
        Column("gate", text, "", f"first gate that blocked ({', '.join(GATES)}) or null"),
        Column(
            "block_reason", text, "", "why no signal: " + ", ".join(r for r in BLOCK_REASONS if r) + "; null = a signal"
        ),
    ]
    cols += [
        Column(f"layer_{name}", f64, "points", f"points of the {name} layer (null: not a layer of the strategy)")
        for name in LAYER_ORDER
    ]
    for name in SCALAR_FIELDS:
        if _detectors_off(cfg, name):
            continue  # no detectors section: no column
        unit, meaning = FEATURE_DOCS.get(
            name, ("see meaning", f"engine feature {name} (stream_apps.core.features.Features)")
        )
        cols.append(Column(f"in_{name}", pa.int64() if name in _INT_FIELDS else f64, unit, meaning))
    cvd_windows, slope_windows = feature_windows(cfg)
    cols += [
        Column(
            f"in_cvd_{duration_name(w)}",
            f64,
            "base quantity",
            f"CVD (taker buy - taker sell quantity) over {duration_name(w)}",
        )
        for w in cvd_windows
    ]
    for prefix, what in (("cvd_slope", "slope"), ("cvd_accel", "acceleration")):
        cols += [
            Column(f"in_{prefix}_{duration_name(w)}", f64, "base quantity", f"{what} of the {duration_name(w)} CVD")
            for w in slope_windows
        ]
    cols.append(Column("in_atr_price_ratio", f64, "fraction", "atr / last_price"))
    cols += [Column(f"in_{name}", f64, *doc) for name, doc in _STRATEGY_INPUT_DOCS.items()]
    cols.append(
        Column(
            "y_binary_60m",
            pa.int8(),
            "0/1",
            f"1: +{TARGET_ATR:g} ATR in the direction reached before -{STOP_ATR:g} ATR within "
            f"{BARRIER_HORIZON_MS // 60_000} min (first touch, trade by trade); 0: stop first or "
            "neither; null: no direction or ATR, or the data ends first",
        )
    )
    cols += [
        Column(
            f"fwd_return_{h}",
            f64,
            "fraction",
            f"last trade price before eval_time + {h} / last_price - 1 "
            "(not signed by direction; null when the data ends first)",
        )
        for h in HORIZONS_MS
    ]
    return cols


def arrow_schema(cfg: StrategyConfig) -> pa.Schema:
    return pa.schema([pa.field(c.name, c.type) for c in export_columns(cfg)])


def schema_document(cfg: StrategyConfig, source: str) -> dict:
    return {
        "format": FORMAT,
        "strategy": cfg.name,
        "strategy_version": cfg.version,
        "config_hash": cfg.config_hash,
        "source": source,
        "layout": "<strategy>/date=YYYY-MM-DD/<SYMBOL>.parquet: one file per symbol and UTC day of eval_time "
        "(none for a day without evaluations); date is a Hive partition key, not a column of the "
        "files; rows in eval_time order",
        "missing": "null (never NaN)",
        "provenance": f"each file's Parquet key-value metadata {METADATA_KEY.decode()}: format, config_hash, "
        "source, replay_from (ms since 1970 UTC: where the engine's replay began)",
        "columns": [c.as_dict() for c in export_columns(cfg)],
    }


def to_table(columns: dict[str, np.ndarray], schema: pa.Schema, metadata: dict | None = None) -> pa.Table:
    """The rows as a table of exactly ``schema`` (NaN and None become null). Columns must be exactly the
    schema's: one the engine did not give, or one it gave that the schema lacks (a new kind of input),
    fails loudly instead of drifting."""
    missing = [f.name for f in schema if f.name not in columns]
    extra = [name for name in columns if name not in schema.names]
    if missing or extra:
        raise ExportError(f"the engine's columns and the export schema differ (missing {missing}, extra {extra})")
    arrays = []
    for field in schema:
        column = columns[field.name]
        if pa.types.is_timestamp(field.type):
            arrays.append(pa.array(np.asarray(column, dtype=np.int64), type=pa.int64()).cast(field.type))
        elif pa.types.is_string(field.type):
            arrays.append(pa.array(np.asarray(column, dtype=object), type=field.type, from_pandas=True))
        else:
            values = np.asarray(column, dtype=np.float64)
            arrays.append(pa.array(values, type=pa.float64(), from_pandas=True).cast(field.type))
    if metadata is not None:
        schema = schema.with_metadata({METADATA_KEY: json.dumps(metadata, sort_keys=True).encode()})
    return pa.Table.from_arrays(arrays, schema=schema)


# -- the engine pass --------------------------------------------------------------------------------------


@dataclass
class Step:
    """One source slice through the engine: its time range, the blocks it produced, its trades and the
    engine's last evaluation point so far (every evaluation before it has been produced)."""

    start_ms: int
    end_ms: int
    blocks: list[FeatureBlock]
    times: np.ndarray | None
    prices: np.ndarray | None
    sealed_ms: int | None


def replay_symbol(
    source: str, symbol: str, strategies: list[StrategyConfig], from_ms: int, to_ms: int, options: dict
) -> Iterator[Step]:
    """The engine over one symbol's history from a backtest source, slice by slice, as research runs it
    (replay state parameters; books and marks as columns, the others as events, as the backtest runner
    gives them)."""
    from backtest.inputs import DEFAULT_SLICE_MS
    from backtest.sources import open_source
    from stream_apps.core.engine import Engine
    from stream_apps.core.params import StateParams

    engine = Engine(strategies, state_params=StateParams.for_replay)
    for piece in open_source(source, [symbol], from_ms, to_ms, slice_ms=DEFAULT_SLICE_MS, **options).slices():
        events = [event for group in piece.engine_events().values() for event in group]
        batch = next(iter(piece.trades.values()), None)
        tables = engine.process([batch] if batch is not None else (), events).tables
        yield Step(
            piece.start_ms,
            piece.end_ms,
            [b for t in tables for b in t.blocks if len(b)],
            batch.time_ms if batch is not None else None,
            batch.price if batch is not None else None,
            engine.sealed_ms,
        )


# -- writing ----------------------------------------------------------------------------------------------


def day_name(day_ms: int) -> str:
    return datetime.fromtimestamp(day_ms / 1000, tz=UTC).strftime("%Y-%m-%d")


def day_file(root: Path, day_ms: int, symbol: str) -> Path:
    return root / f"date={day_name(day_ms)}" / f"{symbol}.parquet"


def write_atomic(table: pa.Table, path: Path) -> None:
    """Write to a hidden temporary file in the same folder, flush it to disk, then rename: ``path``
    exists only complete (a crash leaves at most the temporary file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a run that crashed mid-write
        stale.unlink(missing_ok=True)
    temporary = path.parent / f".{path.name}.{os.getpid()}.tmp"
    try:
        with open(temporary, "wb") as handle:
            pq.write_table(table, handle, compression="zstd")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def file_provenance(path: Path) -> dict | None:
    """The ``tapeflow.export`` metadata of an exported file with its schema (None: not a whole file of
    this format, e.g. written by something else or damaged)."""
    try:
        schema = pq.read_schema(path)
        document = json.loads((schema.metadata or {})[METADATA_KEY])
    except (OSError, KeyError, ValueError, pa.ArrowException):
        return None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        return None
    return {**document, "schema": schema.remove_metadata()}


def _is_done(path: Path, provenance: dict, schema: pa.Schema) -> bool:
    """A day to skip: its file exists, has this run's columns, configuration and source, and its replay
    began on or before this run's (as much warm-up or more)."""
    found = file_provenance(path) if path.exists() else None
    return (
        found is not None
        and found["schema"].equals(schema)
        and all(found.get(key) == provenance[key] for key in ("config_hash", "source"))
        and isinstance(found.get("replay_from"), int)
        and found["replay_from"] <= provenance["replay_from"]
    )


def _day_path(times: np.ndarray, prices: np.ndarray, end_ms: int) -> PricePath | None:
    """The price path the labels of a day read: the last trade before the day and every trade up to
    ``end_ms`` = min(day end + 1 h, end of the data read). Labels look at most an hour ahead and at the
    last trade before a time, so they equal those over one path of the whole replay."""
    inside = times < end_ms
    if not inside.any():
        return None
    return PricePath.from_trades(times[inside], prices[inside], end_ms)


@dataclass
class ExportSummary:
    written: int = 0
    skipped: int = 0
    empty: int = 0  # symbol-days without evaluations: no file
    rows: int = 0
    trades: int = 0


def export(
    cfg: StrategyConfig,
    source: str,
    symbols: list[str],
    from_ms: int,
    to_ms: int,
    out: str | Path,
    *,
    options: dict | None = None,
    overwrite: bool = False,
    on_day: Callable[[str, int, str], None] | None = None,
) -> ExportSummary:
    """Write ``<out>/<strategy>/date=*/<SYMBOL>.parquet`` for every UTC day of ``[from_ms, to_ms)`` (whole
    days) and every symbol (see the module docstring). ``on_day(symbol, day_ms, outcome)`` after each
    day, outcome ``written``, ``skipped`` (done before) or ``empty`` (no evaluations, no file)."""
    if from_ms % DAY_MS or to_ms % DAY_MS:
        raise ExportError("the range must be whole UTC days")
    if to_ms <= from_ms:
        raise ExportError("empty range: --to must be after --from (--to is excluded)")
    if not symbols:
        raise ExportError("--symbols: at least one symbol")
    root = Path(out) / cfg.name
    _prepare(root, schema_document(cfg, source), overwrite)
    schema = arrow_schema(cfg)
    provenance = {"format": FORMAT, "config_hash": cfg.config_hash, "source": source, "replay_from": from_ms}
    days = list(range(from_ms, to_ms, DAY_MS))
    summary = ExportSummary()
    for symbol in symbols:
        todo = [d for d in days if overwrite or not _is_done(day_file(root, d, symbol), provenance, schema)]
        for d in days:
            if d not in todo:
                summary.skipped += 1
                if on_day:
                    on_day(symbol, d, "skipped")
        if todo:
            _export_symbol(
                cfg, source, symbol, from_ms, to_ms, root, schema, provenance, set(todo), options or {}, summary, on_day
            )
    return summary


def _prepare(root: Path, document: dict, overwrite: bool) -> None:
    """The export folder with its ``_schema.json``; an existing export of another configuration or
    source is refused (one folder holds one strategy configuration's data) unless ``overwrite``."""
    path = root / SCHEMA_FILE
    try:
        root.mkdir(parents=True, exist_ok=True)
        if path.exists() and not overwrite:
            try:
                old = json.loads(path.read_text())
            except json.JSONDecodeError:
                raise ExportError(f"{path} is not an export schema: use another --out or --overwrite") from None
            for key in ("config_hash", "source"):
                if old.get(key) != document[key]:
                    raise ExportError(
                        f"{root} holds an export with {key} {old.get(key)!r}, not "
                        f"{document[key]!r}: use another --out or --overwrite"
                    )
        text = json.dumps(document, indent=2) + "\n"
        if not path.exists() or path.read_text() != text:
            temporary = root / f".{SCHEMA_FILE}.{os.getpid()}.tmp"
            temporary.write_text(text)
            os.replace(temporary, path)
    except OSError as error:
        raise ExportError(f"--out {root.parent}: cannot write ({error.strerror or error})") from None


@dataclass
class _DayFileTarget:
    """Where and how one symbol's day files go, and what is counted and reported as they are written."""

    symbol: str
    root: Path
    schema: pa.Schema
    provenance: dict
    todo: set[int]
    summary: ExportSummary
    on_day: Callable[[str, int, str], None] | None


class _SymbolDays:
    """One symbol's evaluations and trades read so far, cut into day files as days become final: a day
    keeps the evaluations of later days and the trades its successors' labels still need."""

    def __init__(self, target: _DayFileTarget, detectors_off: list[str], from_ms: int) -> None:
        self.target = target
        self.detectors_off = detectors_off
        self.pending: list[dict[str, np.ndarray]] = []
        self.times: list[np.ndarray] = []
        self.prices: list[np.ndarray] = []
        self.data_end = from_ms  # the end of the slices read so far: the labels' price path ends there at the latest

    def add(self, step: Step) -> None:
        """Keep a step's evaluations (without the columns of detectors the configuration turns off) and trades."""
        self.data_end = step.end_ms
        for block in step.blocks:
            columns = evaluation_columns(block)
            for name in self.detectors_off:
                del columns[name]
            columns["_sign"] = block.scores.sign.astype(np.int64)
            self.pending.append(columns)
        if step.times is not None and len(step.times):
            self.times.append(step.times)
            self.prices.append(step.prices)
            self.target.summary.trades += len(step.times)

    def finish(self, d: int) -> None:
        """Write day ``d`` (when it is to do) and keep only what later days need."""
        pending = self.pending
        end = d + DAY_MS
        rows = {name: np.concatenate([p[name] for p in pending]) for name in pending[0]} if pending else {}
        t_all = np.concatenate(self.times) if self.times else np.empty(0, dtype=np.int64)
        p_all = np.concatenate(self.prices) if self.prices else np.empty(0)
        index = np.flatnonzero(rows["eval_time"] < end) if rows else np.empty(0, dtype=np.int64)
        if d in self.target.todo:
            self._write_day(d, rows, index, _day_path(t_all, p_all, min(end + BARRIER_HORIZON_MS, self.data_end)))
        if rows:
            later = np.ones(len(rows["eval_time"]), dtype=bool)
            later[index] = False
            self.pending = [{name: column[later] for name, column in rows.items()}] if later.any() else []
        keep = max(int(np.searchsorted(t_all, end, side="left")) - 1, 0)  # from the last trade before
        self.times, self.prices = [t_all[keep:]], [p_all[keep:]]

    def _write_day(self, d: int, rows: dict[str, np.ndarray], index: np.ndarray, path: PricePath | None) -> None:
        """Day ``d``'s file from its rows (``index`` into ``rows``) labelled on ``path``, or nothing when the
        day has no rows or no price path; counted and reported either way."""
        target = self.target
        if len(index) and path is not None:
            index = index[np.argsort(rows["eval_time"][index], kind="stable")]
            day_rows = {name: column[index] for name, column in rows.items()}
            sign = day_rows.pop("_sign")
            day_rows.update(
                label_columns(day_rows["eval_time"], day_rows["in_last_price"], day_rows["in_atr"], sign, path)
            )
            write_atomic(to_table(day_rows, target.schema, target.provenance), day_file(target.root, d, target.symbol))
            target.summary.written += 1
            target.summary.rows += len(index)
            outcome = "written"
        else:
            target.summary.empty += 1
            outcome = "empty"
        if target.on_day:
            target.on_day(target.symbol, d, outcome)


def _day_is_final(step: Step, day: int) -> bool:
    """Whether the engine has evaluated ``day``'s last second and the trades of the hour after it (its
    labels' horizon) are in."""
    return (
        step.sealed_ms is not None
        and step.sealed_ms >= day + DAY_MS - 1000
        and step.end_ms >= day + DAY_MS + BARRIER_HORIZON_MS
    )


def _export_symbol(
    cfg: StrategyConfig,
    source: str,
    symbol: str,
    from_ms: int,
    to_ms: int,
    root: Path,
    schema: pa.Schema,
    provenance: dict,
    todo: set[int],
    options: dict,
    summary: ExportSummary,
    on_day: Callable[[str, int, str], None] | None,
) -> None:
    day, last = from_ms, max(todo)
    detectors_off = [f"in_{name}" for name in SCALAR_FIELDS if _detectors_off(cfg, name)]
    days = _SymbolDays(_DayFileTarget(symbol, root, schema, provenance, todo, summary, on_day), detectors_off, from_ms)
    # the source is read an hour past the range (when it has it) so the last day's labels see their hour,
    # as every other day's do: a day's file does not depend on where the range ended
    for step in replay_symbol(source, symbol, [cfg], from_ms, to_ms + BARRIER_HORIZON_MS, options):
        days.add(step)
        while day <= last and _day_is_final(step, day):
            days.finish(day)
            day += DAY_MS
        if day > last:
            return  # every day still to write is written: the rest of the replay is not needed
    while day <= last:
        days.finish(day)
        day += DAY_MS
