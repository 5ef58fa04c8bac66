"""Binance aggTrades CSV rows to normalised md.trades records, one row at a time.

Columns: agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker.
Files from about 2022 on start with that header line; older ones have none. A first row holding an
`agg_trade_id` field is read as the header (columns are then found by name, extra ones ignored);
otherwise the canonical order is assumed. A BTCUSDT day has 2-5 million rows, so the parser is a
generator over the stdlib's C `csv.reader` on a streamed (decompressing) file: memory stays flat.

Field mapping (same as the live stream, see producers.binance.parse):
    agg_id = agg_trade_id, qty = quantity, taker_side = SELL if is_buyer_maker else BUY,
    event_time = trade_time = transact_time (the archives have no separate event time),
    receive_time = when the archive was opened for reading (one value per file: the time tapeflow
    received the data, as for REST-filled trades; it is not an exchange timestamp).

A row that cannot be normalised (wrong field count, non-numeric or non-finite number, price or
quantity not > 0, first id > last id, an id or time beyond 64 bits, is_buyer_maker not true/false, a
line the csv module refuses) is handed to `on_bad` with its line number and reason and is not
yielded; the caller counts, reports and dead-letters it.
Blank lines carry no data and are skipped.
"""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from producers.backfill.errors import BackfillError
from producers.binance.parse import EXCHANGE

if TYPE_CHECKING:  # numpy is imported where the columns are read: the live producer (its warm start
    import numpy as np  # reads archives row by row) need not import it

COLUMNS = ("agg_trade_id", "price", "quantity", "first_trade_id", "last_trade_id", "transact_time", "is_buyer_maker")
_CANONICAL = tuple(range(len(COLUMNS)))
_INF = float("inf")
_INT64_MAX = 2**63 - 1
_SELL = {"true": "SELL", "false": "BUY", "True": "SELL", "False": "BUY", "TRUE": "SELL", "FALSE": "BUY"}


@dataclass(frozen=True)
class BadRow:
    """A row that was not published: where it is, why, and its text."""

    source: str  # file name
    line: int  # 1-based physical line number (the header, if any, is line 1)
    reason: str
    text: str

    def __str__(self) -> str:
        return f"{self.source}:{self.line}: {self.reason}: {self.text[:120]!r}"


@contextmanager
def open_archive(path: Path) -> Iterator[tuple[BinaryIO, int]]:
    """The CSV of a `.zip` archive (decompressed as it is read) or a plain `.csv`, and its size in bytes."""
    if path.suffix.lower() != ".zip":
        with open(path, "rb") as raw:
            yield raw, path.stat().st_size
        return
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise BackfillError(f"{path.name}: not a readable zip archive ({exc})") from None
    with archive:
        members = [m for m in archive.infolist() if m.filename.lower().endswith(".csv")]
        if len(members) != 1:
            names = [m.filename for m in archive.infolist()]
            raise BackfillError(f"{path.name}: expected exactly one .csv inside, found {names}")
        with archive.open(members[0]) as raw:
            yield raw, members[0].file_size


def _header_index(row: list[str], source: str) -> tuple[int, ...] | None:
    """Column positions if `row` is a header line, else None (a data row)."""
    names = [name.strip().lstrip("\ufeff").lower() for name in row]
    if "agg_trade_id" not in names:
        return None
    missing = [c for c in COLUMNS if c not in names]
    if missing:
        raise BackfillError(f"{source}: header line lacks column(s) {', '.join(missing)}: {','.join(row)!r}")
    return tuple(names.index(c) for c in COLUMNS)


class AggTradeCsvReader:
    """Iterate the normalised trades of one aggTrades CSV stream; bad rows go to `on_bad`."""

    def __init__(
        self, stream: BinaryIO, *, source: str, symbol: str, receive_time: int, on_bad: Callable[[BadRow], None]
    ) -> None:
        self._stream = stream
        self.source = source
        self.symbol = symbol
        self.receive_time = receive_time
        self.on_bad = on_bad
        self.had_header = False
        self._reader = None

    @property
    def line(self) -> int:
        """Physical lines read so far."""
        return self._reader.line_num if self._reader is not None else 0

    def _bad(self, reason: str, row: list[str]) -> None:
        self.on_bad(BadRow(self.source, self._reader.line_num, reason, ",".join(row)))

    def __iter__(self) -> Iterator[dict]:
        text = io.TextIOWrapper(self._stream, encoding="utf-8", errors="replace", newline="")
        reader = self._reader = csv.reader(text)
        exchange, symbol, receive_time = EXCHANGE, self.symbol, self.receive_time
        ia, ip, iq, if_, il, it, im = _CANONICAL
        ncols = len(COLUMNS)
        first = True
        rows = iter(reader)
        while True:  # the for loop runs at full speed; a line the csv module refuses is a bad row, then on
            try:
                for row in rows:
                    if not row:
                        continue
                    if first:
                        first = False
                        index = _header_index(row, self.source)
                        if index is not None:
                            self.had_header = True
                            ia, ip, iq, if_, il, it, im = index
                            ncols = len(row)
                            continue
                    if len(row) != ncols:
                        self._bad(f"{len(row)} fields, expected {ncols}", row)
                        continue
                    try:
                        agg_id = int(row[ia])
                        price = float(row[ip])
                        qty = float(row[iq])
                        first_id = int(row[if_])
                        last_id = int(row[il])
                        ts = int(row[it])
                    except ValueError as exc:
                        self._bad(f"not a number ({exc})", row)
                        continue
                    side = _SELL.get(row[im])
                    if side is None:
                        side = _SELL.get(row[im].strip().lower())
                        if side is None:
                            self._bad(f"is_buyer_maker {row[im]!r} is not true/false", row)
                            continue
                    if not (0.0 < price < _INF and 0.0 < qty < _INF):
                        self._bad("price and quantity must be finite and > 0", row)
                        continue
                    if agg_id < 0 or first_id < 0 or first_id > last_id or ts <= 0:
                        self._bad("ids must be >= 0 with first_trade_id <= last_trade_id, transact_time > 0", row)
                        continue
                    if agg_id > _INT64_MAX or last_id > _INT64_MAX or ts > _INT64_MAX:
                        self._bad("ids and transact_time must fit a 64-bit integer (Avro long)", row)
                        continue
                    yield {
                        "exchange": exchange,
                        "symbol": symbol,
                        "agg_id": agg_id,
                        "price": price,
                        "qty": qty,
                        "first_trade_id": first_id,
                        "last_trade_id": last_id,
                        "event_time": ts,
                        "trade_time": ts,
                        "receive_time": receive_time,
                        "taker_side": side,
                    }
                return
            except csv.Error as exc:  # e.g. a field over the csv module's size limit: that line, not the file
                self.on_bad(BadRow(self.source, reader.line_num, f"unreadable CSV line ({exc})", ""))


@dataclass(frozen=True)
class AggTradeColumns:
    """One aggTrades file as columns (numpy arrays, file order): what the backtest feeds its engine."""

    agg_id: np.ndarray  # int64
    price: np.ndarray  # float64
    qty: np.ndarray  # float64
    first_trade_id: np.ndarray  # int64
    last_trade_id: np.ndarray  # int64
    time_ms: np.ndarray  # int64 (transact_time = event_time = trade_time)
    taker_sell: np.ndarray  # bool (is_buyer_maker)

    def __len__(self) -> int:
        return len(self.agg_id)


_TRUE, _FALSE = ["true", "True", "TRUE"], ["false", "False", "FALSE"]


def read_agg_trade_columns(stream: BinaryIO) -> AggTradeColumns | None:
    """The whole CSV parsed in C by pyarrow (multi-threaded, no Python per row), or None when the file
    is not clean, for the caller to read it with :class:`AggTradeCsvReader` instead, which names every
    bad row: a header without the columns, a field count or number pyarrow refuses, an
    is_buyer_maker other than true/false, or a row the row reader would reject (price or quantity not
    finite and > 0, ids < 0, first id > last id, transact_time <= 0). Real archives are clean, so
    the fallback costs nothing in practice; on a clean file both give the same numbers (pyarrow's
    decimal parsing rounds correctly, as Python's ``float``), which a test checks field by field."""
    import numpy as np
    import pyarrow as pa
    from pyarrow import csv as pacsv

    data = stream.read()
    newline = data.find(b"\n")
    first_line = (data if newline < 0 else data[:newline]).decode("utf-8", errors="replace")
    try:
        first_row = next(csv.reader([first_line]), [])
    except csv.Error:
        return None
    try:
        header = _header_index(first_row, "") if first_row else None
    except BackfillError:  # a header without the columns: the row reader names the file and what is missing
        return None
    names = [n.strip().lstrip("\ufeff").lower() for n in first_row] if header is not None else list(COLUMNS)
    if header is None and len(first_row) != len(COLUMNS):
        return None
    types = {
        "agg_trade_id": pa.int64(),
        "price": pa.float64(),
        "quantity": pa.float64(),
        "first_trade_id": pa.int64(),
        "last_trade_id": pa.int64(),
        "transact_time": pa.int64(),
        "is_buyer_maker": pa.bool_(),
    }
    try:
        table = pacsv.read_csv(
            pa.BufferReader(data),
            read_options=pacsv.ReadOptions(column_names=names, skip_rows=1 if header is not None else 0),
            parse_options=pacsv.ParseOptions(newlines_in_values=False),
            convert_options=pacsv.ConvertOptions(
                column_types=types,
                include_columns=list(COLUMNS),
                true_values=_TRUE,
                false_values=_FALSE,
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
                null_values=[],
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return None
    if any(table.column(c).null_count for c in COLUMNS):
        return None

    def col(name: str) -> np.ndarray:
        return table.column(name).to_numpy()

    cols = AggTradeColumns(
        col("agg_trade_id"),
        col("price"),
        col("quantity"),
        col("first_trade_id"),
        col("last_trade_id"),
        col("transact_time"),
        col("is_buyer_maker").astype(bool),
    )
    ok = (
        (cols.price > 0)
        & (cols.price < np.inf)
        & (cols.qty > 0)
        & (cols.qty < np.inf)
        & (cols.agg_id >= 0)
        & (cols.first_trade_id >= 0)
        & (cols.first_trade_id <= cols.last_trade_id)
        & (cols.time_ms > 0)
    )
    return cols if bool(ok.all()) else None
