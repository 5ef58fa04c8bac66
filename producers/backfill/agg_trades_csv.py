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
quantity not > 0, first id > last id, is_buyer_maker not true/false) is handed to `on_bad` with
its line number and reason and is not yielded; the caller counts, reports and dead-letters it.
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
from typing import BinaryIO

from producers.backfill.errors import BackfillError
from producers.binance.parse import EXCHANGE

COLUMNS = ("agg_trade_id", "price", "quantity", "first_trade_id", "last_trade_id", "transact_time",
           "is_buyer_maker")
_CANONICAL = tuple(range(len(COLUMNS)))
_INF = float("inf")
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

    def __init__(self, stream: BinaryIO, *, source: str, symbol: str, receive_time: int,
                 on_bad: Callable[[BadRow], None]) -> None:
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
        for row in reader:
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
            yield {
                "exchange": exchange, "symbol": symbol, "agg_id": agg_id, "price": price, "qty": qty,
                "first_trade_id": first_id, "last_trade_id": last_id, "event_time": ts, "trade_time": ts,
                "receive_time": receive_time, "taker_side": side,
            }
