"""``--source db``: the tables the sinks fill (``trades``, ``depth_snapshots``, ``mark_prices``,
``liquidations``, ``market_indicators``), read an hour at a time.

Column names are the Avro field names (``sinks.tables``), so a row becomes the record the sink stored
with two conversions: times (``timestamptz``) back to Unix ms, and the book's level arrays back to
``{"price", "qty"}`` lists. Each kind is selected by its engine time (trade time, event time,
receive time for indicators), so an hour's block holds exactly that hour's inputs. Reading uses the
connection the CLI resolves (the read-only role of the embedded stack, or TAPEFLOW_DATABASE_URL).

Trades, the bulk of any range, come in columns with no Python per row: one binary ``COPY (SELECT
...) TO STDOUT`` per symbol and hour, whose rows (five NOT NULL fixed-width fields) are one numpy
structured array over the received bytes; timestamps are PostgreSQL's microseconds since 2000-01-01,
rounded to ms as the row reader rounds them. Should the server send anything else (another binary
layout), that hour is read row by row instead (``_trades_rows``, the reader this replaced; a test
checks both give the same columns, field by field). Marks, a row per symbol and second, are read
the same way (``parse_mark_copy``: fixed-width fields into numpy, then the row reader's dicts), and
the next hour's trades and marks are read together on the second connection.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import numpy as np
import psycopg

from backtest.inputs import DEFAULT_SLICE_MS, Block, MarketSlice, Record, SliceCutter, SourceReport
from backtest.sources import SourceError
from stream_apps.core.events import TradeBatch, book_record

HOUR_MS = 3_600_000

QUERIES = {
    "books": (
        "SELECT exchange, symbol, last_update_id, event_time, receive_time, bid_prices, bid_qtys, ask_prices, "
        "ask_qtys, obi_10 FROM depth_snapshots WHERE exchange = %s AND symbol = ANY(%s) AND event_time >= %s "
        "AND event_time < %s ORDER BY event_time, symbol, last_update_id"
    ),
    "marks": (
        "SELECT exchange, symbol, mark_price, index_price, funding_rate, next_funding_time, event_time, "
        "receive_time FROM mark_prices WHERE exchange = %s AND symbol = ANY(%s) AND event_time >= %s "
        "AND event_time < %s ORDER BY event_time, symbol"
    ),
    "liquidations": (
        "SELECT exchange, symbol, side, liquidated_side, price, avg_price, qty, filled_qty, usd_value, "
        "event_time, trade_time, receive_time FROM liquidations WHERE exchange = %s AND symbol = ANY(%s) "
        "AND trade_time >= %s AND trade_time < %s ORDER BY trade_time, symbol"
    ),
    "indicators": (
        "SELECT exchange, symbol, kind, value, period, extra, event_time, receive_time FROM market_indicators "
        "WHERE exchange = %s AND symbol = ANY(%s) AND receive_time >= %s AND receive_time < %s "
        "ORDER BY receive_time, symbol, kind"
    ),
}
TIME_COLUMNS = ("event_time", "trade_time", "receive_time", "next_funding_time")


# binary COPY: signature, flags, header extension length; then per row a field count and, per field,
# a length and the value (network byte order); then a -1 field count
COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
TRADE_ROW = np.dtype(
    [
        ("fields", ">i2"),
        ("ns", ">i4"),
        ("symbol", ">i4"),
        ("n0", ">i4"),
        ("agg_id", ">i8"),
        ("n1", ">i4"),
        ("time_us", ">i8"),
        ("n2", ">i4"),
        ("price", ">f8"),
        ("n3", ">i4"),
        ("qty", ">f8"),
        ("n4", ">i4"),
        ("sell", "u1"),
    ]
)
TRADE_LENGTHS = {"fields": 6, "ns": 4, "n0": 8, "n1": 8, "n2": 8, "n3": 8, "n4": 1}
PG_ORIGIN_US = 946_684_800_000_000  # 2000-01-01 in Unix microseconds
# every asked symbol of an hour in one scan (the table's time index serves the range, not the symbol),
# the symbol as its 1-based position in the asked list: a fixed-width field, rows grouped by it
TRADES_QUERY = (
    "SELECT array_position(%(symbols)s::text[], symbol), agg_id, trade_time, price, qty, "
    "taker_side = 'SELL' FROM trades WHERE exchange = %(exchange)s AND symbol = ANY(%(symbols)s) "
    "AND trade_time >= %(lo)s AND trade_time < %(hi)s ORDER BY 1, trade_time, agg_id"
)


class BinaryLayoutError(ValueError):
    """A binary COPY answer that is not the fixed layout ``TRADE_ROW`` expects."""


def parse_trade_copy(data: bytes | bytearray | memoryview) -> dict[str, np.ndarray] | None:
    """The columns of a binary COPY of ``TRADES_QUERY``'s six fields (``None``: no rows)."""
    buf = memoryview(data)
    if bytes(buf[:11]) != COPY_SIGNATURE:
        raise BinaryLayoutError("not a binary COPY answer")
    ext = int.from_bytes(buf[15:19], "big")
    body = buf[19 + ext :]
    if len(body) < 2 or bytes(body[-2:]) != b"\xff\xff":
        raise BinaryLayoutError("no end marker")
    body = body[:-2]
    if len(body) % TRADE_ROW.itemsize:
        raise BinaryLayoutError(f"{len(body)} bytes of rows is not a multiple of {TRADE_ROW.itemsize}")
    rows = np.frombuffer(body, dtype=TRADE_ROW)
    if not len(rows):
        return None
    for name, length in TRADE_LENGTHS.items():
        if not (rows[name] == length).all():
            raise BinaryLayoutError(f"field {name}: not {length} bytes in every row")
    return {
        "symbol": rows["symbol"].astype(np.int64),
        "agg_id": rows["agg_id"].astype(np.int64),
        "time_ms": _pg_ms(rows["time_us"]),
        "price": rows["price"].astype(np.float64),
        "qty": rows["qty"].astype(np.float64),
        "sell": rows["sell"].astype(bool),
    }


def _pg_ms(time_us: np.ndarray) -> np.ndarray:
    """PostgreSQL timestamps (µs since 2000-01-01) as Unix ms, rounded as ``_ms`` rounds them."""
    us = time_us.astype(np.int64) + PG_ORIGIN_US
    q, r = np.divmod(us, 1000)
    return q + ((r > 500) | ((r == 500) & (q % 2 == 1)))  # round half to even, as round() in _ms


# marks: every second per symbol (the live markPrice@1s stream), the most rows of an hour after the
# trades; read like them, by binary COPY of fixed-width fields, the symbol as its position in the list
MARKS_QUERY = (
    "SELECT array_position(%(symbols)s::text[], symbol), mark_price, index_price, funding_rate, "
    "next_funding_time, event_time, receive_time FROM mark_prices WHERE exchange = %(exchange)s AND "
    "symbol = ANY(%(symbols)s) AND event_time >= %(lo)s AND event_time < %(hi)s ORDER BY event_time, symbol"
)
MARK_ROW = np.dtype(
    [("fields", ">i2"), ("n0", ">i4"), ("symbol", ">i4")]
    + [
        (part, kind)
        for k, name in enumerate(("mark", "index", "funding"))
        for part, kind in ((f"n{k + 1}", ">i4"), (name, ">f8"))
    ]
    + [
        (part, kind)
        for k, name in enumerate(("next_us", "event_us", "receive_us"))
        for part, kind in ((f"n{k + 4}", ">i4"), (name, ">i8"))
    ]
)
MARK_LENGTHS = {"fields": 7, "n0": 4, **{f"n{k}": 8 for k in range(1, 7)}}


def parse_mark_copy(data: bytes | bytearray | memoryview, symbols: list[str], exchange: str) -> list[Record]:
    """The records of a binary COPY of ``MARKS_QUERY`` (the row reader's dicts, key for key)."""
    buf = memoryview(data)
    if bytes(buf[:11]) != COPY_SIGNATURE:
        raise BinaryLayoutError("not a binary COPY answer")
    body = buf[19 + int.from_bytes(buf[15:19], "big") :]
    if len(body) < 2 or bytes(body[-2:]) != b"\xff\xff" or (len(body) - 2) % MARK_ROW.itemsize:
        raise BinaryLayoutError("not the marks layout")
    rows = np.frombuffer(body[:-2], dtype=MARK_ROW)
    for name, length in MARK_LENGTHS.items():
        if not (rows[name] == length).all():
            raise BinaryLayoutError(f"field {name}: not {length} bytes in every row")
    names = np.array(symbols, dtype=object)[rows["symbol"].astype(np.int64) - 1].tolist()
    columns = zip(
        names,
        rows["mark"].astype(np.float64).tolist(),
        rows["index"].astype(np.float64).tolist(),
        rows["funding"].astype(np.float64).tolist(),
        _pg_ms(rows["next_us"]).tolist(),
        _pg_ms(rows["event_us"]).tolist(),
        _pg_ms(rows["receive_us"]).tolist(),
    )
    return [
        {
            "exchange": exchange,
            "symbol": symbol,
            "mark_price": mark,
            "index_price": index,
            "funding_rate": funding,
            "next_funding_time": next_ms,
            "event_time": event_ms,
            "receive_time": receive_ms,
        }
        for symbol, mark, index, funding, next_ms, event_ms, receive_ms in columns
    ]


def _ms(value: datetime) -> int:
    return round(value.timestamp() * 1000)


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


class DatabaseSource:
    exchange = "binance"

    def __init__(
        self,
        conninfo: str,
        symbols: list[str],
        from_ms: int,
        to_ms: int,
        *,
        slice_ms: int = DEFAULT_SLICE_MS,
        exchange: str = "binance",
    ) -> None:
        self.conninfo = conninfo
        self.symbols = list(symbols)
        self.from_ms, self.to_ms = from_ms, to_ms
        self.exchange = exchange
        self.name = "db"
        self.slice_ms = slice_ms
        self.report = SourceReport()
        self._kinds: set[str] | None = None

    def _connect(self) -> psycopg.Connection:
        try:
            return psycopg.connect(self.conninfo)
        except psycopg.OperationalError as exc:
            raise SourceError(f"db: cannot connect: {str(exc).strip().splitlines()[0]}") from None

    def inputs(self) -> set[str]:
        if self._kinds is None:
            with self._connect() as conn:
                rows = conn.execute(
                    "SELECT DISTINCT kind FROM market_indicators WHERE exchange = %s AND symbol = ANY(%s)",
                    (self.exchange, self.symbols),
                ).fetchall()
            self._kinds = {"trades", "book", "mark", "liquidations"} | {r[0] for r in rows}
        return set(self._kinds)

    def slices(self) -> Iterator[MarketSlice]:
        return SliceCutter(self.from_ms, self.to_ms, self.slice_ms).cut(self.blocks())

    def blocks(self) -> Iterator[Block]:
        """Hour blocks; the next hour's trades and marks (the bulk) are read on a second connection
        while the caller runs the engine over this one (the server's scan and sort then use the other core)."""
        seen: set[str] = set()
        hours = [
            (max(start, self.from_ms), min(start + HOUR_MS, self.to_ms))
            for start in range(self.from_ms // HOUR_MS * HOUR_MS, self.to_ms, HOUR_MS)
        ]
        with self._connect() as conn, self._connect() as trade_conn, ThreadPoolExecutor(1) as ahead:
            pending = ahead.submit(self._bulk, trade_conn, *hours[0]) if hours else None
            for k, (lo, hi) in enumerate(hours):
                trades, marks = pending.result()
                if k + 1 < len(hours):
                    pending = ahead.submit(self._bulk, trade_conn, *hours[k + 1])
                block = Block(lo, hi, trades=trades)
                seen.update(batch.symbol for batch in block.trades.values())
                for kind, query in QUERIES.items():
                    if kind == "marks":
                        block.records[kind] = marks
                        continue
                    block.records[kind] = [
                        self._record(kind, row)
                        for row in conn.execute(query, (self.exchange, self.symbols, _dt(lo), _dt(hi)))
                    ]
                yield block
        for symbol in self.symbols:
            if symbol not in seen:
                self.report.missing.append(f"{symbol}: no rows in trades for the range")

    def _trades(self, conn: psycopg.Connection, lo: int, hi: int) -> dict[str, TradeBatch]:
        params = {"symbols": self.symbols, "exchange": self.exchange, "lo": _dt(lo), "hi": _dt(hi)}
        with conn.cursor() as cur:
            data = bytearray()
            with cur.copy(f"COPY ({TRADES_QUERY}) TO STDOUT (FORMAT binary)", params) as copy:
                for chunk in copy:
                    data += chunk
        try:
            columns = parse_trade_copy(data)
        except BinaryLayoutError:
            columns = self._trades_rows(conn, params)
        out = {}
        if columns is None:
            return out
        bounds = np.searchsorted(columns["symbol"], np.arange(1, len(self.symbols) + 2))
        for k, symbol in enumerate(self.symbols):
            a, b = bounds[k], bounds[k + 1]
            if b > a:
                out[f"{self.exchange}:{symbol}"] = TradeBatch.from_arrays(
                    self.exchange,
                    symbol,
                    columns["agg_id"][a:b],
                    columns["time_ms"][a:b],
                    columns["price"][a:b],
                    columns["qty"][a:b],
                    columns["sell"][a:b],
                )
        return out

    def _bulk(self, conn: psycopg.Connection, lo: int, hi: int) -> tuple[dict[str, TradeBatch], list[Record]]:
        return self._trades(conn, lo, hi), self._marks(conn, lo, hi)

    def _marks(self, conn: psycopg.Connection, lo: int, hi: int) -> list[Record]:
        """The hour's marks by binary COPY (``parse_mark_copy``); by ``QUERIES["marks"]`` row by row
        should the server answer in another layout."""
        params = {"symbols": self.symbols, "exchange": self.exchange, "lo": _dt(lo), "hi": _dt(hi)}
        with conn.cursor() as cur:
            data = bytearray()
            with cur.copy(f"COPY ({MARKS_QUERY}) TO STDOUT (FORMAT binary)", params) as copy:
                for chunk in copy:
                    data += chunk
        try:
            return parse_mark_copy(data, self.symbols, self.exchange)
        except BinaryLayoutError:
            rows = conn.execute(QUERIES["marks"], (self.exchange, self.symbols, _dt(lo), _dt(hi)))
            return [self._record("marks", row) for row in rows]

    @staticmethod
    def _trades_rows(conn: psycopg.Connection, params: dict) -> dict[str, np.ndarray] | None:
        """The same columns row by row (the reader before binary COPY; kept for any other layout)."""
        rows = conn.execute(TRADES_QUERY, params).fetchall()
        if not rows:
            return None
        symbols, ids, times, prices, qtys, sells = zip(*rows)
        return {
            "symbol": np.asarray(symbols, dtype=np.int64),
            "agg_id": np.asarray(ids, dtype=np.int64),
            "time_ms": np.fromiter((_ms(t) for t in times), np.int64, len(times)),
            "price": np.asarray(prices, dtype=np.float64),
            "qty": np.asarray(qtys, dtype=np.float64),
            "sell": np.asarray(sells, dtype=bool),
        }

    @staticmethod
    def _record(kind: str, row: tuple[Any, ...]) -> Record:
        if kind == "books":
            ex, sym, uid, event, receive, bid_p, bid_q, ask_p, ask_q, obi = row
            return book_record(
                {
                    "exchange": ex,
                    "symbol": sym,
                    "last_update_id": uid,
                    "event_time": _ms(event),
                    "receive_time": _ms(receive),
                    "obi_10": obi,
                },
                bid_p,
                bid_q,
                ask_p,
                ask_q,
            )
        names = {
            "marks": (
                "exchange",
                "symbol",
                "mark_price",
                "index_price",
                "funding_rate",
                "next_funding_time",
                "event_time",
                "receive_time",
            ),
            "liquidations": (
                "exchange",
                "symbol",
                "side",
                "liquidated_side",
                "price",
                "avg_price",
                "qty",
                "filled_qty",
                "usd_value",
                "event_time",
                "trade_time",
                "receive_time",
            ),
            "indicators": ("exchange", "symbol", "kind", "value", "period", "extra", "event_time", "receive_time"),
        }[kind]
        record = dict(zip(names, row))
        for name in TIME_COLUMNS:
            if name in record:
                record[name] = _ms(record[name])
        if kind == "indicators":
            record["extra"] = {k: float(v) for k, v in (record["extra"] or {}).items()}
        return record
