"""``--source db``: the tables the sinks fill (``trades``, ``depth_snapshots``, ``mark_prices``,
``liquidations``, ``market_indicators``), read an hour at a time.

Column names are the Avro field names (``sinks.tables``), so a row becomes the record the sink stored
with two conversions: times (``timestamptz``) back to epoch ms, and the book's level arrays back to
``{"price", "qty"}`` lists. Each kind is selected by its engine time (trade time, event time,
receive time for indicators), so an hour's block holds exactly that hour's inputs. Reading uses the
connection the CLI resolves (the read-only role of the embedded stack, or TAPEFLOW_DATABASE_URL).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import numpy as np
import psycopg

from backtest.inputs import DEFAULT_SLICE_MS, Block, MarketSlice, Record, SliceCutter, SourceReport
from backtest.sources import SourceError
from stream_apps.core.events import TradeBatch

HOUR_MS = 3_600_000

QUERIES = {
    "books": ("SELECT exchange, symbol, last_update_id, event_time, receive_time, bid_prices, bid_qtys, ask_prices, "
              "ask_qtys, obi_10 FROM depth_snapshots WHERE exchange = %s AND symbol = ANY(%s) AND event_time >= %s "
              "AND event_time < %s ORDER BY event_time, symbol, last_update_id"),
    "marks": ("SELECT exchange, symbol, mark_price, index_price, funding_rate, next_funding_time, event_time, "
              "receive_time FROM mark_prices WHERE exchange = %s AND symbol = ANY(%s) AND event_time >= %s "
              "AND event_time < %s ORDER BY event_time, symbol"),
    "liquidations": ("SELECT exchange, symbol, side, liquidated_side, price, avg_price, qty, filled_qty, usd_value, "
                     "event_time, trade_time, receive_time FROM liquidations WHERE exchange = %s AND symbol = ANY(%s) "
                     "AND trade_time >= %s AND trade_time < %s ORDER BY trade_time, symbol"),
    "indicators": ("SELECT exchange, symbol, kind, value, period, extra, event_time, receive_time FROM market_indicators "
                   "WHERE exchange = %s AND symbol = ANY(%s) AND receive_time >= %s AND receive_time < %s "
                   "ORDER BY receive_time, symbol, kind"),
}
TIME_COLUMNS = ("event_time", "trade_time", "receive_time", "next_funding_time")


def _ms(value: datetime) -> int:
    return round(value.timestamp() * 1000)


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


class DatabaseSource:
    exchange = "binance"

    def __init__(self, conninfo: str, symbols: list[str], from_ms: int, to_ms: int, *, slice_ms: int = DEFAULT_SLICE_MS,
                 exchange: str = "binance") -> None:
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
                rows = conn.execute("SELECT DISTINCT kind FROM market_indicators WHERE exchange = %s AND symbol = ANY(%s)",
                                    (self.exchange, self.symbols)).fetchall()
            self._kinds = {"trades", "book", "mark", "liquidations"} | {r[0] for r in rows}
        return set(self._kinds)

    def slices(self) -> Iterator[MarketSlice]:
        return SliceCutter(self.from_ms, self.to_ms, self.slice_ms).cut(self.blocks())

    def blocks(self) -> Iterator[Block]:
        seen: set[str] = set()
        with self._connect() as conn:
            for start in range(self.from_ms // HOUR_MS * HOUR_MS, self.to_ms, HOUR_MS):
                lo, hi = max(start, self.from_ms), min(start + HOUR_MS, self.to_ms)
                block = Block(lo, hi, trades=self._trades(conn, lo, hi))
                seen.update(batch.symbol for batch in block.trades.values())
                for kind, query in QUERIES.items():
                    block.records[kind] = [self._record(kind, row) for row in
                                           conn.execute(query, (self.exchange, self.symbols, _dt(lo), _dt(hi)))]
                yield block
        for symbol in self.symbols:
            if symbol not in seen:
                self.report.missing.append(f"{symbol}: no rows in trades for the range")

    def _trades(self, conn: psycopg.Connection, lo: int, hi: int) -> dict[str, TradeBatch]:
        out = {}
        for symbol in self.symbols:
            rows = conn.execute(
                "SELECT agg_id, trade_time, price, qty, taker_side = 'SELL' FROM trades WHERE exchange = %s AND "
                "symbol = %s AND trade_time >= %s AND trade_time < %s ORDER BY trade_time, agg_id",
                (self.exchange, symbol, _dt(lo), _dt(hi))).fetchall()
            if rows:
                ids, times, prices, qtys, sells = zip(*rows)
                out[f"{self.exchange}:{symbol}"] = TradeBatch.from_arrays(
                    self.exchange, symbol, ids, np.fromiter((_ms(t) for t in times), np.int64, len(times)),
                    prices, qtys, sells)
        return out

    @staticmethod
    def _record(kind: str, row: tuple[Any, ...]) -> Record:
        if kind == "books":
            ex, sym, uid, event, receive, bid_p, bid_q, ask_p, ask_q, obi = row
            return {"exchange": ex, "symbol": sym, "last_update_id": uid, "event_time": _ms(event),
                    "receive_time": _ms(receive), "bids": [{"price": p, "qty": q} for p, q in zip(bid_p, bid_q)],
                    "asks": [{"price": p, "qty": q} for p, q in zip(ask_p, ask_q)], "obi_10": obi}
        names = {"marks": ("exchange", "symbol", "mark_price", "index_price", "funding_rate", "next_funding_time",
                           "event_time", "receive_time"),
                 "liquidations": ("exchange", "symbol", "side", "liquidated_side", "price", "avg_price", "qty",
                                  "filled_qty", "usd_value", "event_time", "trade_time", "receive_time"),
                 "indicators": ("exchange", "symbol", "kind", "value", "period", "extra", "event_time",
                                "receive_time")}[kind]
        record = dict(zip(names, row))
        for name in TIME_COLUMNS:
            if name in record:
                record[name] = _ms(record[name])
        if kind == "indicators":
            record["extra"] = {k: float(v) for k, v in (record["extra"] or {}).items()}
        return record
