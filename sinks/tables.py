"""Where each topic's records are stored and how one decoded record becomes one row.

The sink's write path is: decoded Avro records -> `spec.to_row(record)` tuples -> binary COPY into a
per-connection temporary staging table -> `INSERT INTO <table> SELECT ... ON CONFLICT DO NOTHING`.
COPY cannot skip duplicates, and redelivery after a crash or rebalance is normal (offsets are
committed after the database commit), so the insert from staging is what makes the sink
idempotent on each table's natural key. `write_rows` does exactly that; the consumer may call it or
compose the SQL (`staging_ddl`, `copy_sql`, `insert_sql`) itself.

Rows are plain tuples in `columns` order, typed for binary COPY as `copy_types` says: Unix
milliseconds become aware UTC datetimes (timestamptz), Avro maps become psycopg `Jsonb` dumped with
orjson, order-book levels become parallel price/quantity lists (double precision[]), Avro enums stay
strings. Doubles are staged as double precision even where the table column is numeric (money): the
INSERT's assignment cast converts them, with 15 significant digits, so a Python float never has to
become a Decimal on the hot path.

Staging must be typed like the rows, not like the table (`LIKE <table>` would make the money
columns numeric, and binary COPY does not convert float8 to numeric): use `staging_ddl()`.

The converters are written out per topic rather than generated from the schemas: they are the
sink's inner loop (one call per record at hundreds of thousands of records a second), and an
explicit tuple expression is both the fastest form in CPython and the easiest to review against the
table definition. tests/sinks/test_db_schema_tables.py checks every converter against its .avsc and its table.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any

import orjson
import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from schemas.catalogue import DLQ_PREFIX, all_topics

Record = Mapping[str, Any]
Row = tuple

_UNIX_ZERO = datetime(1970, 1, 1, tzinfo=UTC)


def ms_to_datetime(ms: int) -> datetime:
    """Unix milliseconds -> aware UTC datetime, exactly (integer arithmetic, no float rounding)."""
    return _UNIX_ZERO + timedelta(milliseconds=ms)


def _ts_or_none(ms: int | None) -> datetime | None:
    return None if ms is None else _UNIX_ZERO + timedelta(milliseconds=ms)


def _jsonb(value: Any) -> Jsonb:
    return Jsonb(value, dumps=orjson.dumps)


def dead_letter_digest(record: Record) -> bytes:
    """SHA-256 identifying one dead letter: every field, the raw key and value unambiguously framed."""
    key = record.get("key")
    h = hashlib.sha256(
        orjson.dumps(
            [
                record["source_topic"],
                record.get("partition"),
                record.get("offset"),
                record["stage"],
                record["error"],
                record["event_time"],
                None if key is None else len(key),
            ]
        )
    )
    if key is not None:
        h.update(key)
    h.update(record["value"])
    return h.digest()


@dataclass(frozen=True)
class TableSpec:
    """One table: its columns in row order, their staging types, its natural key and converter."""

    table: str
    columns: tuple[str, ...]
    copy_types: tuple[str, ...]
    natural_key: tuple[str, ...]
    time_column: str
    to_row: Callable[[Record], Row]
    #: the record's field holding the row's time when it is not named like `time_column` (xv.orders'
    #: time_ms is stored in order_time); None: the same name
    record_time_field: str | None = None

    def __post_init__(self) -> None:
        if len(self.columns) != len(self.copy_types):
            raise ValueError(f"{self.table}: {len(self.columns)} columns but {len(self.copy_types)} copy types")
        missing = [c for c in (*self.natural_key, self.time_column) if c not in self.columns]
        if missing:
            raise ValueError(f"{self.table}: key/time columns {missing} are not in columns")

    @property
    def pg_types(self) -> tuple[str, ...]:
        """Alias of copy_types (what `copy.set_types` takes)."""
        return self.copy_types

    @property
    def time_field(self) -> str:
        """Record field holding the row's time (Unix ms): the time column's name (column names are the
        record's field names) unless `record_time_field` says otherwise. The sink reads it to make the
        partitions of old rows and to record the days written (retention's guard)."""
        return self.record_time_field or self.time_column

    @property
    def staging_table(self) -> str:
        return f"tapeflow_stage_{self.table}"

    def staging_ddl(self) -> sql.Composed:
        """CREATE TEMP TABLE IF NOT EXISTS for this connection's staging table (typed as the rows)."""
        cols = sql.SQL(", ").join(
            sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(t)) for c, t in zip(self.columns, self.copy_types)
        )
        return sql.SQL("CREATE TEMP TABLE IF NOT EXISTS {} ({})").format(sql.Identifier(self.staging_table), cols)

    def copy_sql(self) -> sql.Composed:
        return sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
            sql.Identifier(self.staging_table), sql.SQL(", ").join(map(sql.Identifier, self.columns))
        )

    def insert_sql(self) -> sql.Composed:
        """Staging -> table, skipping rows whose natural key (or any unique key) already exists."""
        cols = sql.SQL(", ").join(map(sql.Identifier, self.columns))
        return sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {} ON CONFLICT DO NOTHING").format(
            sql.Identifier(self.table), cols, cols, sql.Identifier(self.staging_table)
        )


def write_rows(conn: psycopg.Connection, spec: TableSpec, rows: Iterable[Row]) -> int:
    """Binary-COPY `rows` into the staging table and insert the new ones; returns rows inserted.

    Runs in a transaction (a savepoint inside the caller's, so several tables can be written and
    committed together before the Kafka offsets are). The staging table is emptied afterwards.
    """
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(spec.staging_ddl())
        with cur.copy(spec.copy_sql()) as copy:
            copy.set_types(spec.copy_types)
            for row in rows:
                copy.write_row(row)
        cur.execute(spec.insert_sql())
        inserted = cur.rowcount
        cur.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(spec.staging_table)))
    return inserted


def direct_copy_sql(spec: TableSpec) -> sql.Composed:
    return sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
        sql.Identifier(spec.table), sql.SQL(", ").join(map(sql.Identifier, spec.columns))
    )


def copy_binary(conn: psycopg.Connection, spec: TableSpec, payload: bytes, rows: int) -> int:
    """Store a complete binary COPY stream of `rows` rows (typed as the table); returns rows inserted.

    First straight into the table, in a savepoint: the normal case (nothing stored yet) costs one
    COPY and no staging. If a natural key already exists (a re-delivered batch), PostgreSQL refuses
    the whole COPY, the savepoint is rolled back and the same stream goes through staging and
    `INSERT ... ON CONFLICT DO NOTHING` like `write_rows`: idempotent either way. Only for tables
    whose column types are their copy types (sinks.columnar.COLUMNAR; tests check it).
    """
    try:
        with conn.transaction(), conn.cursor() as cur:
            with cur.copy(direct_copy_sql(spec)) as copy:
                copy.write(payload)
        return rows
    except psycopg.errors.UniqueViolation:
        pass
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(spec.staging_ddl())
        with cur.copy(spec.copy_sql()) as copy:
            copy.write(payload)
        cur.execute(spec.insert_sql())
        inserted = cur.rowcount
        cur.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(spec.staging_table)))
    return inserted


# --- converters, one per record schema -------------------------------------------------------------


def trade_row(r: Record) -> Row:
    return (
        r["exchange"],
        r["symbol"],
        r["agg_id"],
        r["price"],
        r["qty"],
        r["first_trade_id"],
        r["last_trade_id"],
        ms_to_datetime(r["event_time"]),
        ms_to_datetime(r["trade_time"]),
        ms_to_datetime(r["receive_time"]),
        r["taker_side"],
    )


def depth_diff_row(r: Record) -> Row:
    bids, asks = r["bids"], r["asks"]
    return (
        r["exchange"],
        r["symbol"],
        r["first_update_id"],
        r["final_update_id"],
        r.get("prev_final_update_id"),
        ms_to_datetime(r["event_time"]),
        ms_to_datetime(r["transaction_time"]),
        ms_to_datetime(r["receive_time"]),
        [lv["price"] for lv in bids],
        [lv["qty"] for lv in bids],
        [lv["price"] for lv in asks],
        [lv["qty"] for lv in asks],
    )


def book_snapshot_row(r: Record) -> Row:
    bids, asks = r["bids"], r["asks"]
    return (
        r["exchange"],
        r["symbol"],
        r["last_update_id"],
        ms_to_datetime(r["event_time"]),
        ms_to_datetime(r["receive_time"]),
        [lv["price"] for lv in bids],
        [lv["qty"] for lv in bids],
        [lv["price"] for lv in asks],
        [lv["qty"] for lv in asks],
        r["obi_10"],
    )


def liquidation_row(r: Record) -> Row:
    return (
        r["exchange"],
        r["symbol"],
        r["side"],
        r["liquidated_side"],
        r["price"],
        r["avg_price"],
        r["qty"],
        r["filled_qty"],
        r["usd_value"],
        ms_to_datetime(r["event_time"]),
        ms_to_datetime(r["trade_time"]),
        ms_to_datetime(r["receive_time"]),
    )


def mark_price_row(r: Record) -> Row:
    return (
        r["exchange"],
        r["symbol"],
        r["mark_price"],
        r["index_price"],
        r["funding_rate"],
        ms_to_datetime(r["next_funding_time"]),
        ms_to_datetime(r["event_time"]),
        ms_to_datetime(r["receive_time"]),
    )


def market_indicator_row(r: Record) -> Row:
    return (
        r["exchange"],
        r["symbol"],
        r["kind"],
        r["value"],
        r.get("period"),
        _jsonb(r.get("extra") or {}),
        ms_to_datetime(r["event_time"]),
        ms_to_datetime(r["receive_time"]),
    )


def data_gap_row(r: Record) -> Row:
    return (
        r["exchange"],
        r["symbol"],
        r["stream"],
        r["from_id"],
        r["to_id"],
        ms_to_datetime(r["detected_time"]),
        r["reason"],
    )


def bar_row(r: Record) -> Row:
    return (
        r["exchange"],
        r["symbol"],
        ms_to_datetime(r["open_time"]),
        ms_to_datetime(r["close_time"]),
        r["open"],
        r["high"],
        r["low"],
        r["close"],
        r["volume"],
        r["buy_volume"],
        r["sell_volume"],
        r["quote_volume"],
        r["vwap"],
        r["trade_count"],
        r["first_agg_id"],
        r["last_agg_id"],
    )


def feature_row(r: Record) -> Row:
    return (
        r["evaluation_id"],
        r["strategy"],
        r["strategy_version"],
        r["config_hash"],
        r["exchange"],
        r["symbol"],
        ms_to_datetime(r["eval_time"]),
        _jsonb(r["inputs"]),
        _jsonb(r["layer_scores"]),
        r["score"],
        r.get("direction"),
        r.get("gate"),
        r.get("block_reason"),
        r.get("config_rev"),
        r.get("p_win"),
    )


def signal_row(r: Record) -> Row:
    return (
        r["signal_id"],
        r["strategy"],
        r["strategy_version"],
        r["config_hash"],
        r["exchange"],
        r["symbol"],
        ms_to_datetime(r["eval_time"]),
        r["direction"],
        r["tier"],
        r["score"],
        _jsonb(r["factors"]),
        r["price"],
        r["atr"],
        r["risk_distance"],
        r["sl_price"],
        r["tp1_price"],
        r["tp2_price"],
        r["sl_r"],
        r["tp1_r"],
        r["tp2_r"],
        r.get("is_flip", False),
        r.get("timeout_ms"),
        r.get("config_rev"),
        r.get("p_win"),
        r.get("size_mult"),
    )


def order_event_row(r: Record) -> Row:
    return (
        r["client_order_id"],
        r.get("signal_id"),
        r.get("position_id"),
        r.get("exchange_order_id"),
        r["exchange"],
        r["symbol"],
        r["mode"],
        r["leg"],
        r["side"],
        r["type"],
        r.get("price"),
        r.get("stop_price"),
        r["qty"],
        r.get("filled_qty", 0.0),
        r.get("avg_fill_price"),
        r.get("reduce_only", False),
        r["state"],
        r.get("reason"),
        ms_to_datetime(r["event_time"]),
        r.get("mid_at_send"),
        r.get("mid_source"),
        r.get("config_rev"),
        r.get("avg_market_price"),
    )


def fill_row(r: Record) -> Row:
    return (
        r["exchange"],
        r["symbol"],
        r["mode"],
        r["client_order_id"],
        r["exchange_order_id"],
        r["trade_id"],
        r["side"],
        r["price"],
        r["qty"],
        r["fee"],
        r["fee_asset"],
        r["liquidity"],
        r.get("reference_price"),
        ms_to_datetime(r["event_time"]),
        r.get("market_price"),
    )


def position_event_row(r: Record) -> Row:
    return (
        r["position_id"],
        r["signal_id"],
        r["strategy"],
        r["strategy_version"],
        r["config_hash"],
        r["exchange"],
        r["symbol"],
        r["mode"],
        r["event"],
        r["direction"],
        r["tier"],
        r["entry_price"],
        r["qty"],
        r["r_usd"],
        r["sl_price"],
        r["tp1_price"],
        r["tp2_price"],
        r.get("exit_price"),
        r.get("exit_reason"),
        r.get("pnl_r_gross"),
        r.get("pnl_r_net"),
        r.get("fees_r", 0.0),
        r.get("slippage_r", 0.0),
        ms_to_datetime(r["event_time"]),
        r.get("funding_r", 0.0),
        r.get("timeout_ms"),
        r.get("config_rev"),
    )


def risk_event_row(r: Record) -> Row:
    return (
        r["scope"],
        r["mode"],
        r["decision"],
        r["state"],
        r["reason"],
        r.get("daily_pnl_r"),
        r.get("consecutive_losses"),
        _ts_or_none(r.get("paused_until")),
        ms_to_datetime(r["event_time"]),
    )


def cross_venue_feature_row(r: Record) -> Row:
    g = r.get
    return (
        r["feature_id"],
        r["coin"],
        ms_to_datetime(r["eval_time"]),
        r["sell_venue"],
        r["buy_venue"],
        g("sell_symbol"),
        g("buy_symbol"),
        r["sweep_notional_usd"],
        g("spread_top"),
        g("spread_sweep"),
        g("sell_bid"),
        g("buy_ask"),
        g("sell_sweep_bid"),
        g("buy_sweep_ask"),
        g("top_slope_per_min"),
        g("sweep_slope_per_min"),
        g("leg_skew_ms"),
        g("sell_book_age_ms"),
        g("buy_book_age_ms"),
        g("funding_diff"),
        g("funding_diff_8h"),
        g("sell_funding_rate"),
        g("buy_funding_rate"),
        _ts_or_none(g("sell_next_funding_time")),
        _ts_or_none(g("buy_next_funding_time")),
        g("sell_basis"),
        g("buy_basis"),
        _jsonb(r["stats"]),
        _jsonb(r["missing"]),
    )


def watchlist_signal_row(r: Record) -> Row:
    g = r.get
    return (
        r["signal_id"],
        r["strategy"],
        r["strategy_version"],
        r["config_hash"],
        r["coin"],
        ms_to_datetime(r["eval_time"]),
        r["sell_venue"],
        r["buy_venue"],
        g("sell_symbol"),
        g("buy_symbol"),
        r["notional_usd"],
        r["status"],
        g("reason"),
        g("z_1h"),
        g("spread_sweep"),
        g("net_spread"),
        g("funding_diff_8h"),
        g("entry_spread"),
        g("entry_net_spread"),
        g("entry_sell_vwap"),
        g("entry_buy_vwap"),
        g("expected_pnl"),
        g("win_prob"),
        _jsonb(r["imputed"]),
        g("feature_id"),
        g("expected_carry_8h_usd"),
        g("entry_sweep_cost"),
        g("break_even_hours"),
    )


def watchlist_leg_order_row(r: Record) -> Row:
    g = r.get
    return (
        r["client_order_id"],
        r["pair_id"],
        r["signal_id"],
        r["coin"],
        r["leg"],
        r["action"],
        r["venue"],
        r["symbol"],
        r["side"],
        r["qty"],
        g("avg_price"),
        g("top_price"),
        r["fee"],
        r["slippage_usd"],
        r["status"],
        g("reason"),
        ms_to_datetime(r["time_ms"]),
        _ts_or_none(g("book_time_ms")),
        g("filled_qty"),
        g("ref_price"),
        g("limit_price"),
        _ts_or_none(g("sent_ms")),
        g("attempt"),
        g("latency_usd"),
        g("liquidation_usd"),
    )


def watchlist_funding_payment_row(r: Record) -> Row:
    return (
        r["pair_id"],
        r["coin"],
        r["leg"],
        r["venue"],
        r["symbol"],
        ms_to_datetime(r["funding_time_ms"]),
        r["rate"],
        r["mark_price"],
        r["qty"],
        r["paid"],
        r.get("predicted_rate"),
    )


def watchlist_command_row(r: Record) -> Row:
    g = r.get
    return (
        r["command_id"],
        r["status"],
        r["action"],
        r["strategy"],
        r["coin"],
        g("sell_venue"),
        g("sell_symbol"),
        g("buy_venue"),
        g("buy_symbol"),
        g("pair_id"),
        g("notional_usd"),
        g("shown_spread"),
        _ts_or_none(g("shown_time")),
        ms_to_datetime(r["requested_time"]),
        _ts_or_none(g("acted_time")),
        r["who"],
        r["reason"],
        g("detail"),
    )


def watchlist_pair_event_row(r: Record) -> Row:
    g = r.get
    return (
        r["pair_id"],
        r["seq"],
        ms_to_datetime(r["event_time"]),
        r["signal_id"],
        r["pair_key"],
        r["coin"],
        r["short_venue"],
        r["short_symbol"],
        r["long_venue"],
        r["long_symbol"],
        r["notional_usd"],
        r["qty"],
        r["status"],
        g("reason"),
        g("close_reason"),
        ms_to_datetime(r["opened_ms"]),
        _ts_or_none(g("closed_ms")),
        g("entry_spread"),
        g("exit_spread"),
        r["gross_usd"],
        r["fees_usd"],
        r["slippage_usd"],
        r["funding_usd"],
        r["net_usd"],
        r["short_gross_usd"],
        r["short_fees_usd"],
        r["short_slippage_usd"],
        r["short_funding_usd"],
        r["short_net_usd"],
        r["long_gross_usd"],
        r["long_fees_usd"],
        r["long_slippage_usd"],
        r["long_funding_usd"],
        r["long_net_usd"],
        g("leg_latency_usd"),
        g("liquidation_usd"),
        g("short_leg_latency_usd"),
        g("short_liquidation_usd"),
        g("long_leg_latency_usd"),
        g("long_liquidation_usd"),
    )


def dead_letter_row(r: Record) -> Row:
    return (
        r["source_topic"],
        r.get("partition"),
        r.get("offset"),
        r.get("key"),
        r["value"],
        r["error"],
        r["stage"],
        ms_to_datetime(r["event_time"]),
        dead_letter_digest(r),
    )


# --- the specs -----------------------------------------------------------------------------------------


def _spec(
    table: str,
    cols: Sequence[tuple[str, str]],
    key: Sequence[str],
    time_column: str,
    to_row: Callable[[Record], Row],
    record_time_field: str | None = None,
) -> TableSpec:
    return TableSpec(
        table, tuple(c for c, _ in cols), tuple(t for _, t in cols), tuple(key), time_column, to_row, record_time_field
    )


_T, _F8, _I8, _I4, _TS, _B = "text", "float8", "int8", "int4", "timestamptz", "bool"
_F8A, _JSONB, _BYTEA = "float8[]", "jsonb", "bytea"

TRADES = _spec(
    "trades",
    [
        ("exchange", _T),
        ("symbol", _T),
        ("agg_id", _I8),
        ("price", _F8),
        ("qty", _F8),
        ("first_trade_id", _I8),
        ("last_trade_id", _I8),
        ("event_time", _TS),
        ("trade_time", _TS),
        ("receive_time", _TS),
        ("taker_side", _T),
    ],
    ("exchange", "symbol", "agg_id", "trade_time"),
    "trade_time",
    trade_row,
)

DEPTH_UPDATES = _spec(
    "depth_updates",
    [
        ("exchange", _T),
        ("symbol", _T),
        ("first_update_id", _I8),
        ("final_update_id", _I8),
        ("prev_final_update_id", _I8),
        ("event_time", _TS),
        ("transaction_time", _TS),
        ("receive_time", _TS),
        ("bid_prices", _F8A),
        ("bid_qtys", _F8A),
        ("ask_prices", _F8A),
        ("ask_qtys", _F8A),
    ],
    ("exchange", "symbol", "final_update_id", "event_time"),
    "event_time",
    depth_diff_row,
)

DEPTH_SNAPSHOTS = _spec(
    "depth_snapshots",
    [
        ("exchange", _T),
        ("symbol", _T),
        ("last_update_id", _I8),
        ("event_time", _TS),
        ("receive_time", _TS),
        ("bid_prices", _F8A),
        ("bid_qtys", _F8A),
        ("ask_prices", _F8A),
        ("ask_qtys", _F8A),
        ("obi_10", _F8),
    ],
    ("exchange", "symbol", "last_update_id", "event_time"),
    "event_time",
    book_snapshot_row,
)

LIQUIDATIONS = _spec(
    "liquidations",
    [
        ("exchange", _T),
        ("symbol", _T),
        ("side", _T),
        ("liquidated_side", _T),
        ("price", _F8),
        ("avg_price", _F8),
        ("qty", _F8),
        ("filled_qty", _F8),
        ("usd_value", _F8),
        ("event_time", _TS),
        ("trade_time", _TS),
        ("receive_time", _TS),
    ],
    ("exchange", "symbol", "trade_time", "side", "price", "qty"),
    "trade_time",
    liquidation_row,
)

MARK_PRICES = _spec(
    "mark_prices",
    [
        ("exchange", _T),
        ("symbol", _T),
        ("mark_price", _F8),
        ("index_price", _F8),
        ("funding_rate", _F8),
        ("next_funding_time", _TS),
        ("event_time", _TS),
        ("receive_time", _TS),
    ],
    ("exchange", "symbol", "event_time"),
    "event_time",
    mark_price_row,
)

MARKET_INDICATORS = _spec(
    "market_indicators",
    [
        ("exchange", _T),
        ("symbol", _T),
        ("kind", _T),
        ("value", _F8),
        ("period", _T),
        ("extra", _JSONB),
        ("event_time", _TS),
        ("receive_time", _TS),
    ],
    ("exchange", "symbol", "kind", "event_time"),
    "event_time",
    market_indicator_row,
)

DATA_GAPS = _spec(
    "data_gaps",
    [
        ("exchange", _T),
        ("symbol", _T),
        ("stream", _T),
        ("from_id", _I8),
        ("to_id", _I8),
        ("detected_time", _TS),
        ("reason", _T),
    ],
    ("exchange", "symbol", "stream", "from_id", "to_id"),
    "detected_time",
    data_gap_row,
)

BARS_1M = _spec(
    "bars_1m",
    [
        ("exchange", _T),
        ("symbol", _T),
        ("open_time", _TS),
        ("close_time", _TS),
        ("open", _F8),
        ("high", _F8),
        ("low", _F8),
        ("close", _F8),
        ("volume", _F8),
        ("buy_volume", _F8),
        ("sell_volume", _F8),
        ("quote_volume", _F8),
        ("vwap", _F8),
        ("trade_count", _I8),
        ("first_agg_id", _I8),
        ("last_agg_id", _I8),
    ],
    ("exchange", "symbol", "open_time"),
    "open_time",
    bar_row,
)

FEATURES = _spec(
    "features",
    [
        ("evaluation_id", _T),
        ("strategy", _T),
        ("strategy_version", _T),
        ("config_hash", _T),
        ("exchange", _T),
        ("symbol", _T),
        ("eval_time", _TS),
        ("inputs", _JSONB),
        ("layer_scores", _JSONB),
        ("score", _F8),
        ("direction", _T),
        ("gate", _T),
        ("block_reason", _T),
        ("config_rev", _I4),  # added by 0025
        ("p_win", _F8),  # added by 0027
    ],
    ("evaluation_id", "eval_time"),
    "eval_time",
    feature_row,
)

SIGNALS = _spec(
    "signals",
    [
        ("signal_id", _T),
        ("strategy", _T),
        ("strategy_version", _T),
        ("config_hash", _T),
        ("exchange", _T),
        ("symbol", _T),
        ("eval_time", _TS),
        ("direction", _T),
        ("tier", _T),
        ("score", _F8),
        ("factors", _JSONB),
        ("price", _F8),
        ("atr", _F8),
        ("risk_distance", _F8),
        ("sl_price", _F8),
        ("tp1_price", _F8),
        ("tp2_price", _F8),
        ("sl_r", _F8),
        ("tp1_r", _F8),
        ("tp2_r", _F8),
        ("is_flip", _B),
        ("timeout_ms", _I8),  # added by 0012
        ("config_rev", _I4),  # added by 0025
        ("p_win", _F8),  # added by 0027
        ("size_mult", _F8),  # added by 0027
    ],
    ("signal_id",),
    "eval_time",
    signal_row,
)

ORDERS = _spec(
    "orders",
    [
        ("client_order_id", _T),
        ("signal_id", _T),
        ("position_id", _T),
        ("exchange_order_id", _T),
        ("exchange", _T),
        ("symbol", _T),
        ("mode", _T),
        ("leg", _T),
        ("side", _T),
        ("type", _T),
        ("price", _F8),
        ("stop_price", _F8),
        ("qty", _F8),
        ("filled_qty", _F8),
        ("avg_fill_price", _F8),
        ("reduce_only", _B),
        ("state", _T),
        ("reason", _T),
        ("event_time", _TS),
        ("mid_at_send", _F8),
        ("mid_source", _T),
        ("config_rev", _I4),  # added by 0025
        ("avg_market_price", _F8),  # added by 0030
    ],
    ("mode", "client_order_id", "state", "filled_qty"),
    "event_time",
    order_event_row,
)

FILLS = _spec(
    "fills",
    [
        ("exchange", _T),
        ("symbol", _T),
        ("mode", _T),
        ("client_order_id", _T),
        ("exchange_order_id", _T),
        ("trade_id", _T),
        ("side", _T),
        ("price", _F8),
        ("qty", _F8),
        ("fee", _F8),
        ("fee_asset", _T),
        ("liquidity", _T),
        ("reference_price", _F8),
        ("event_time", _TS),
        ("market_price", _F8),  # added by 0031
    ],
    ("mode", "exchange", "symbol", "exchange_order_id", "trade_id"),
    "event_time",
    fill_row,
)

POSITIONS = _spec(
    "positions",
    [
        ("position_id", _T),
        ("signal_id", _T),
        ("strategy", _T),
        ("strategy_version", _T),
        ("config_hash", _T),
        ("exchange", _T),
        ("symbol", _T),
        ("mode", _T),
        ("event", _T),
        ("direction", _T),
        ("tier", _T),
        ("entry_price", _F8),
        ("qty", _F8),
        ("r_usd", _F8),
        ("sl_price", _F8),
        ("tp1_price", _F8),
        ("tp2_price", _F8),
        ("exit_price", _F8),
        ("exit_reason", _T),
        ("pnl_r_gross", _F8),
        ("pnl_r_net", _F8),
        ("fees_r", _F8),
        ("slippage_r", _F8),
        ("event_time", _TS),
        ("funding_r", _F8),  # added by 0006: after event_time
        ("timeout_ms", _I8),  # added by 0012
        ("config_rev", _I4),  # added by 0025
    ],
    ("mode", "position_id", "event"),
    "event_time",
    position_event_row,
)

RISK_EVENTS = _spec(
    "risk_events",
    [
        ("scope", _T),
        ("mode", _T),
        ("decision", _T),
        ("state", _T),
        ("reason", _T),
        ("daily_pnl_r", _F8),
        ("consecutive_losses", _I4),
        ("paused_until", _TS),
        ("event_time", _TS),
    ],
    ("mode", "scope", "event_time", "decision", "reason"),
    "event_time",
    risk_event_row,
)

XV_FEATURES = _spec(
    "xv_features",
    [
        ("feature_id", _T),
        ("coin", _T),
        ("eval_time", _TS),
        ("sell_venue", _T),
        ("buy_venue", _T),
        ("sell_symbol", _T),
        ("buy_symbol", _T),
        ("sweep_notional_usd", _F8),
        ("spread_top", _F8),
        ("spread_sweep", _F8),
        ("sell_bid", _F8),
        ("buy_ask", _F8),
        ("sell_sweep_bid", _F8),
        ("buy_sweep_ask", _F8),
        ("top_slope_per_min", _F8),
        ("sweep_slope_per_min", _F8),
        ("leg_skew_ms", _I8),
        ("sell_book_age_ms", _I8),
        ("buy_book_age_ms", _I8),
        ("funding_diff", _F8),
        ("funding_diff_8h", _F8),
        ("sell_funding_rate", _F8),
        ("buy_funding_rate", _F8),
        ("sell_next_funding_time", _TS),
        ("buy_next_funding_time", _TS),
        ("sell_basis", _F8),
        ("buy_basis", _F8),
        ("stats", _JSONB),
        ("missing", _JSONB),
    ],
    ("feature_id", "eval_time"),
    "eval_time",
    cross_venue_feature_row,
)

# The watchlist's trading records (migration 0017). Money (fees, slippage, funding, P&L) is numeric in
# the tables, staged as double like every other money column; the record's *_ms times are stored in
# *_time columns (order_time, book_time, funding_time, opened_time, closed_time).
XV_SIGNALS = _spec(
    "xv_signals",
    [
        ("signal_id", _T),
        ("strategy", _T),
        ("strategy_version", _T),
        ("config_hash", _T),
        ("coin", _T),
        ("eval_time", _TS),
        ("sell_venue", _T),
        ("buy_venue", _T),
        ("sell_symbol", _T),
        ("buy_symbol", _T),
        ("notional_usd", _F8),
        ("status", _T),
        ("reason", _T),
        ("z_1h", _F8),
        ("spread_sweep", _F8),
        ("net_spread", _F8),
        ("funding_diff_8h", _F8),
        ("entry_spread", _F8),
        ("entry_net_spread", _F8),
        ("entry_sell_vwap", _F8),
        ("entry_buy_vwap", _F8),
        ("expected_pnl", _F8),
        ("win_prob", _F8),
        ("imputed", _JSONB),
        ("feature_id", _T),
        ("expected_carry_8h_usd", _F8),
        ("entry_sweep_cost", _F8),
        ("break_even_hours", _F8),
    ],
    ("signal_id", "eval_time"),
    "eval_time",
    watchlist_signal_row,
)

XV_LEG_ORDERS = _spec(
    "xv_leg_orders",
    [
        ("client_order_id", _T),
        ("pair_id", _T),
        ("signal_id", _T),
        ("coin", _T),
        ("leg", _T),
        ("action", _T),
        ("venue", _T),
        ("symbol", _T),
        ("side", _T),
        ("qty", _F8),
        ("avg_price", _F8),
        ("top_price", _F8),
        ("fee", _F8),
        ("slippage_usd", _F8),
        ("status", _T),
        ("reason", _T),
        ("order_time", _TS),
        ("book_time", _TS),
        ("filled_qty", _F8),
        ("ref_price", _F8),
        ("limit_price", _F8),
        ("sent_time", _TS),
        ("attempt", _I4),
        ("latency_usd", _F8),
        ("liquidation_usd", _F8),
    ],
    ("client_order_id", "order_time"),
    "order_time",
    watchlist_leg_order_row,
    "time_ms",
)

XV_FUNDING_PAYMENTS = _spec(
    "xv_funding_payments",
    [
        ("pair_id", _T),
        ("coin", _T),
        ("leg", _T),
        ("venue", _T),
        ("symbol", _T),
        ("funding_time", _TS),
        ("rate", _F8),
        ("mark_price", _F8),
        ("qty", _F8),
        ("paid", _F8),
        ("predicted_rate", _F8),
    ],
    ("pair_id", "leg", "funding_time"),
    "funding_time",
    watchlist_funding_payment_row,
    "funding_time_ms",
)

XV_PAIR_EVENTS = _spec(
    "xv_pair_events",
    [
        ("pair_id", _T),
        ("seq", _I8),
        ("event_time", _TS),
        ("signal_id", _T),
        ("pair_key", _T),
        ("coin", _T),
        ("short_venue", _T),
        ("short_symbol", _T),
        ("long_venue", _T),
        ("long_symbol", _T),
        ("notional_usd", _F8),
        ("qty", _F8),
        ("status", _T),
        ("reason", _T),
        ("close_reason", _T),
        ("opened_time", _TS),
        ("closed_time", _TS),
        ("entry_spread", _F8),
        ("exit_spread", _F8),
        ("gross_usd", _F8),
        ("fees_usd", _F8),
        ("slippage_usd", _F8),
        ("funding_usd", _F8),
        ("net_usd", _F8),
        ("short_gross_usd", _F8),
        ("short_fees_usd", _F8),
        ("short_slippage_usd", _F8),
        ("short_funding_usd", _F8),
        ("short_net_usd", _F8),
        ("long_gross_usd", _F8),
        ("long_fees_usd", _F8),
        ("long_slippage_usd", _F8),
        ("long_funding_usd", _F8),
        ("long_net_usd", _F8),
        ("leg_latency_usd", _F8),
        ("liquidation_usd", _F8),
        ("short_leg_latency_usd", _F8),
        ("short_liquidation_usd", _F8),
        ("long_leg_latency_usd", _F8),
        ("long_liquidation_usd", _F8),
    ],
    ("pair_id", "seq", "event_time"),
    "event_time",
    watchlist_pair_event_row,
)

# Operator commands to the watchlist traders and their answers (migration 0020): not partitioned.
XV_COMMANDS = _spec(
    "xv_commands",
    [
        ("command_id", _T),
        ("status", _T),
        ("action", _T),
        ("strategy", _T),
        ("coin", _T),
        ("sell_venue", _T),
        ("sell_symbol", _T),
        ("buy_venue", _T),
        ("buy_symbol", _T),
        ("pair_id", _T),
        ("notional_usd", _F8),
        ("shown_spread", _F8),
        ("shown_time", _TS),
        ("requested_time", _TS),
        ("acted_time", _TS),
        ("who", _T),
        ("reason", _T),
        ("detail", _T),
    ],
    ("command_id", "status"),
    "requested_time",
    watchlist_command_row,
)

PIPELINE_ERRORS = _spec(
    "pipeline_errors",
    [
        ("source_topic", _T),
        ("source_partition", _I4),
        ("source_offset", _I8),
        ("raw_key", _BYTEA),
        ("raw_value", _BYTEA),
        ("error", _T),
        ("stage", _T),
        ("event_time", _TS),
        ("content_sha256", _BYTEA),
    ],
    ("content_sha256",),
    "event_time",
    dead_letter_row,
)

TABLES: Mapping[str, TableSpec] = MappingProxyType(
    {
        s.table: s
        for s in (
            TRADES,
            DEPTH_UPDATES,
            DEPTH_SNAPSHOTS,
            LIQUIDATIONS,
            MARK_PRICES,
            MARKET_INDICATORS,
            DATA_GAPS,
            BARS_1M,
            FEATURES,
            SIGNALS,
            ORDERS,
            FILLS,
            POSITIONS,
            RISK_EVENTS,
            XV_FEATURES,
            XV_SIGNALS,
            XV_LEG_ORDERS,
            XV_FUNDING_PAYMENTS,
            XV_PAIR_EVENTS,
            XV_COMMANDS,
            PIPELINE_ERRORS,
        )
    }
)

# Every primary catalogue topic -> its table; every dlq.* topic -> pipeline_errors (table_for_topic).
TOPIC_TABLES: Mapping[str, TableSpec] = MappingProxyType(
    {
        "md.trades": TRADES,
        "md.depth": DEPTH_UPDATES,
        "md.book": DEPTH_SNAPSHOTS,
        "md.liquidations": LIQUIDATIONS,
        "md.mark": MARK_PRICES,
        "md.indicators": MARKET_INDICATORS,
        "md.gaps": DATA_GAPS,
        "bars.1m": BARS_1M,
        "features": FEATURES,
        "signals": SIGNALS,
        "orders": ORDERS,
        "fills": FILLS,
        "positions": POSITIONS,
        "risk.events": RISK_EVENTS,
        "xv.features": XV_FEATURES,
        "xv.signals": XV_SIGNALS,
        "xv.orders": XV_LEG_ORDERS,
        "xv.funding": XV_FUNDING_PAYMENTS,
        "xv.pairs": XV_PAIR_EVENTS,
        "xv.commands": XV_COMMANDS,
    }
)


def sinkable_topics() -> frozenset[str]:
    """Every catalogue topic the sink stores: the primary topics with a table and every dlq.* topic."""
    return frozenset(t.name for t in all_topics() if t.is_dlq or t.name in TOPIC_TABLES)


def table_for_topic(topic: str) -> TableSpec:
    """The table records of `topic` go to: dead-letter topics all go to pipeline_errors."""
    if topic.startswith(DLQ_PREFIX):
        return PIPELINE_ERRORS
    try:
        return TOPIC_TABLES[topic]
    except KeyError:
        raise ValueError(f"no table for topic {topic!r} (known: {', '.join(TOPIC_TABLES)}, dlq.*)") from None
