"""``--source vision[:DIR]``: Binance Vision archives (USD-M futures), read in place, no broker.

Files, per symbol (the producers' record shapes they become, and how):

| archive (data.binance.vision/data/...) | becomes |
|---|---|
| ``futures/um/daily/aggTrades`` | md.trades, parsed and cached by ``backtest.sources.vision_trades`` (the backfill's reader for a file with bad rows) |
| ``futures/um/daily/metrics`` (5-min, since 2021-12) | md.indicators: ``open_interest_hist`` (sum_open_interest), ``long_short_account_ratio`` (count_long_short_ratio), ``top_trader_position_ratio`` (sum_toptrader_long_short_ratio), ``taker_buy_sell_ratio`` (sum_taker_long_short_vol_ratio) |
| ``futures/um/monthly/fundingRate`` | the funding rate and times of md.mark |
| ``futures/um/daily/markPriceKlines/1m`` | md.mark every minute (the close, known at the minute's end) |
| ``futures/um/daily/bookTicker``, ``bookDepth`` | md.book, where present (see below) |
| ``spot/daily/klines/1m`` | md.indicators ``spot_perp_divergence`` every 5 min, as the live poller |

Approximations, all stated in the run's notes (``SourceReport.notes``) and coverage:
- md.mark: Binance's live funding estimate is not archived. Each minute's record carries the rate
  of the last settlement (known then: no look-ahead); one record 1 ms before every funding time
  carries the rate that settlement charged, so the executor settles positions with the real rate
  and the newest mark price (the last trade's price when there are no mark klines). The index price
  is not archived here: it is set to the mark price.
- md.book: ``bookDepth`` has no levels, only the depth within +/-1..5 % of the price; OBI is
  approximated as (depth within -1 % - depth within +1 %) / their sum (the live engine uses the top 10
  levels). ``bookTicker`` adds the best bid/ask (one level, the last of each second; the paper
  broker's book slippage walks it). Where neither exists, OBI is missing (a v53 OBI gate vetoes).
- md.indicators are stamped as received ``indicator_delay_ms`` (default 150 s, half the live
  poller's 5-minute interval) after their data point.
- Coinbase premium and liquidations have no public history: missing, and said so.

Downloads: ``VisionDownloader`` of the backfill (``.CHECKSUM`` verified, retried, cached under
``cache_dir`` in Vision's own tree). ``DIR`` holds files in that same tree (a mirror), and aggTrades
also flat by file name (as ``tapeflow backfill --dir``); a ``.CHECKSUM`` beside a file is checked.
A file that does not exist is a missing day (listed); a checksum mismatch stops the run.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np

from backtest.inputs import (
    DEFAULT_SLICE_MS,
    ENGINE_TIME,
    RECORD_KINDS,
    Block,
    MarketSlice,
    Record,
    SliceCutter,
    SourceReport,
    sort_records,
)
from backtest.sources import SourceError
from backtest.sources.column_cache import HOUR_MS, HOURS, ColumnCache
from backtest.sources.vision_trades import EXCHANGE, DayTradeReader, DayTrades
from producers.backfill.agg_trades_csv import open_archive
from producers.backfill.errors import BackfillError
from producers.backfill.sources import VisionDownloader
from producers.backfill.vision_files import (
    CHECKSUM_SUFFIX,
    DEFAULT_BASE_URL,
    parse_checksum,
    verify_checksum,
)
from producers.base.book import order_book_imbalance
from tapeflow_runtime.native_memory import system_arrow_pool

DAY_MS = 86_400_000
MINUTE_MS = 60_000
POLL_MS = 300_000
INDICATOR_DELAY_MS = 150_000
NO_HISTORY = "no public history"

# kind -> (path template under data/, daily?); {S} symbol, {D} day, {M} month
FILES = {
    "aggTrades": ("futures/um/daily/aggTrades/{S}/{S}-aggTrades-{D}.zip", True),
    "metrics": ("futures/um/daily/metrics/{S}/{S}-metrics-{D}.zip", True),
    "markPriceKlines": ("futures/um/daily/markPriceKlines/{S}/1m/{S}-1m-{D}.zip", True),
    "bookTicker": ("futures/um/daily/bookTicker/{S}/{S}-bookTicker-{D}.zip", True),
    "bookDepth": ("futures/um/daily/bookDepth/{S}/{S}-bookDepth-{D}.zip", True),
    "spotKlines": ("spot/daily/klines/{S}/1m/{S}-1m-{D}.zip", True),
    "fundingRate": ("futures/um/monthly/fundingRate/{S}/{S}-fundingRate-{M}.zip", False),
}
NOTES = {
    "coinbase_premium": f"{NO_HISTORY} (Coinbase premium)",
    "liquidations": f"{NO_HISTORY} (Binance Vision has no USD-M liquidation archive)",
    "obi": "approximated from bookDepth: (depth within -1% - depth within +1%) / sum, not the top 10 levels",
    "funding_rate": "engine: rate of the last settlement (Binance's live estimate is not archived); "
    "positions pay each settlement's own rate",
    "index_price": "not archived here: set to the mark price",
}


def relative_path(kind: str, symbol: str, day: date) -> str:
    template, _daily = FILES[kind]
    return template.format(S=symbol, D=day.isoformat(), M=f"{day.year:04d}-{day.month:02d}")


def _ms(text: str) -> int:
    """Unix ms from "2024-01-01 00:05:00" (UTC) or a millisecond/microsecond integer."""
    text = text.strip()
    if text.isdigit():
        value = int(text)
        return value // 1000 if value > 10**14 else value  # spot archives use microseconds since 2025
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


def _finite(text: str) -> float:
    """A finite float from a CSV field; ValueError otherwise ("nan" and "inf" parse, but are not data)."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text!r} is not finite")
    return value


def _rows(path: Path, on_bad: Callable[[str], None]) -> Iterator[tuple[int, list[str], list[str] | None]]:
    """(line, fields, header) of a Vision CSV (zip or csv); a first line that is not numeric is the header.
    A line the csv module refuses (a field over its size limit) goes to `on_bad` and is skipped."""
    with open_archive(path) as (raw, _):
        reader = csv.reader(io.TextIOWrapper(raw, encoding="utf-8", errors="replace", newline=""))
        header: list[str] | None = None
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                on_bad(f"{path.name}:{reader.line_num}: unreadable CSV line ({exc})")
                continue
            if not row:
                continue
            if reader.line_num == 1 and not row[0].strip().lstrip("-").replace(".", "").isdigit():
                header = [c.strip().lower() for c in row]
                continue
            yield reader.line_num, row, header


@dataclass
class _Found:
    path: Path
    origin: str


class VisionFiles:
    """Where each archive comes from: ``directory`` (read in place) or the verified download cache."""

    def __init__(self, directory: Path | None, cache_dir: Path | None, base_url: str | None) -> None:
        if directory is not None and not directory.is_dir():
            raise SourceError(f"vision:{directory}: not a directory")
        self.directory = directory
        self.base_url = (base_url or DEFAULT_BASE_URL).rstrip("/")
        self.downloader = (
            None if directory is not None else VisionDownloader(self.base_url, cache_dir or Path(".vision-cache"))
        )
        self.cache_dir = cache_dir

    def where(self, rel: str) -> str:
        return str(self.directory / "data" / rel) if self.directory is not None else f"{self.base_url}/data/{rel}"

    def get(self, rel: str) -> _Found | None:
        if self.directory is not None:
            for candidate in (self.directory / "data" / rel, self.directory / rel, self.directory / Path(rel).name):
                if "aggTrades" not in rel and candidate == self.directory / Path(rel).name:
                    continue  # kline files share names across kinds: only the tree layout is unambiguous
                for path in (candidate, candidate.with_suffix(".csv")):
                    if path.is_file():
                        checksum = path.with_name(path.name + CHECKSUM_SUFFIX)
                        if checksum.is_file():
                            verify_checksum(path, parse_checksum(checksum.read_text(), path.name))
                        return _Found(path, "directory")
            return None
        assert self.downloader is not None and self.cache_dir is not None
        got = self.downloader.fetch_url(f"{self.base_url}/data/{rel}", self.cache_dir / "data" / rel)
        return _Found(*got) if got is not None else None


class VisionSource:
    """``vision[:DIR]`` over ``[from_ms, to_ms)``; see the module docstring."""

    exchange = EXCHANGE

    def __init__(
        self,
        symbols: list[str],
        from_ms: int,
        to_ms: int,
        *,
        directory: Path | None = None,
        cache_dir: Path | None = None,
        base_url: str | None = None,
        slice_ms: int = DEFAULT_SLICE_MS,
        indicator_delay_ms: int = INDICATOR_DELAY_MS,
        column_cache: ColumnCache | None = None,
    ) -> None:
        self.symbols = list(symbols)
        self.column_cache = column_cache  # parsed aggTrades files (``column_cache``); None: parse every time
        system_arrow_pool()  # day files are parsed one after another: their buffers must not pile up
        self.from_ms, self.to_ms = from_ms, to_ms
        self.name = f"vision:{directory}" if directory is not None else "vision"
        self.files = VisionFiles(directory, cache_dir, base_url)
        self.slice_ms = slice_ms
        self.indicator_delay_ms = indicator_delay_ms
        self.report = SourceReport(notes=dict(NOTES))
        self._funding: dict[tuple[str, str], list[tuple[int, float]]] = {}  # (symbol, month) -> settlements
        self._found_kinds: set[str] = set()
        self._trade_reader = DayTradeReader(self._fetch, column_cache, self.report)

    def inputs(self) -> set[str]:
        return {
            "trades",
            "mark",
            "book",
            "open_interest_hist",
            "long_short_account_ratio",
            "top_trader_position_ratio",
            "taker_buy_sell_ratio",
            "spot_perp_divergence",
        }

    def days(self) -> list[date]:
        first = datetime.fromtimestamp(self.from_ms / 1000, tz=UTC).date()
        last = datetime.fromtimestamp((self.to_ms - 1) / 1000, tz=UTC).date()
        return [first + timedelta(days=i) for i in range((last - first).days + 1)]

    def slices(self) -> Iterator[MarketSlice]:
        return SliceCutter(self.from_ms, self.to_ms, self.slice_ms).cut(self.blocks())

    def blocks(self) -> Iterator[Block]:
        """One block per hour: a day's records are read per day (they are small), its trades an hour
        of each symbol at a time from the column cache, so memory holds one symbol-day only while a
        file is parsed, not the day of every symbol, nor the range."""
        carry: dict[str, list[Record]] = {kind: [] for kind in RECORD_KINDS}
        for day in self.days():
            start = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)
            kinds = carry
            day_trades: dict[str, DayTrades] = {}
            for symbol in self.symbols:
                trades, records = self._day(symbol, day, start)
                if trades is not None:
                    day_trades[f"{EXCHANGE}:{symbol}"] = trades
                for kind, recs in records.items():
                    kinds[kind].extend(recs)
            carry = {kind: [] for kind in RECORD_KINDS}
            day_records: dict[str, list[Record]] = {}
            for kind, recs in kinds.items():  # an indicator of 23:55 is received after midnight
                recs = sort_records(recs, kind)
                cut = sum(1 for r in recs if r[ENGINE_TIME[kind]] < start + DAY_MS)
                day_records[kind], carry[kind] = recs[:cut], recs[cut:]
            times = {
                kind: np.fromiter((r[ENGINE_TIME[kind]] for r in recs), dtype=np.int64, count=len(recs))
                for kind, recs in day_records.items()
            }
            for hour in range(HOURS):
                lo_ms = start + hour * HOUR_MS
                if lo_ms + HOUR_MS <= self.from_ms or lo_ms >= self.to_ms:
                    continue
                block = Block(lo_ms, lo_ms + HOUR_MS)
                for key, trades in day_trades.items():
                    batch = trades.hour(hour)
                    if len(batch):
                        block.trades[key] = batch
                for kind, recs in day_records.items():
                    lo, hi = np.searchsorted(times[kind], [lo_ms, lo_ms + HOUR_MS], side="left")
                    block.records[kind] = recs[lo:hi]
                yield block
        for kind in ("metrics", "markPriceKlines", "bookTicker", "bookDepth", "spotKlines"):
            if kind not in self._found_kinds:
                self.report.notes[f"{kind}_files"] = f"no {kind} archive for any day of the range"

    # ------------------------------------------------------------------------------------------
    def _fetch(self, kind: str, symbol: str, day: date, *, required: bool = False, listed: bool = True) -> Path | None:
        rel = relative_path(kind, symbol, day)
        try:
            found = self.files.get(rel)
        except BackfillError as exc:
            raise SourceError(str(exc)) from None
        if found is None:
            # an optional kind never seen is a note (see blocks), not a gap
            if listed and (required or kind in self._found_kinds):
                self.report.missing.append(
                    f"{symbol} {day.isoformat() if FILES[kind][1] else rel} {kind}: "
                    f"not found at {self.files.where(rel)}"
                )
            return None
        self._found_kinds.add(kind)
        return found.path

    def _day(self, symbol: str, day: date, start: int) -> tuple[DayTrades | None, dict[str, list[Record]]]:
        trades = self._trade_reader.day(symbol, day, start)
        records: dict[str, list[Record]] = {kind: [] for kind in RECORD_KINDS}
        records["indicators"] = self._metrics(symbol, day)
        marks = self._mark_klines(symbol, day)
        records["marks"] = self._marks(symbol, day, start, marks, trades)
        records["books"] = self._books(symbol, day)
        records["indicators"] += self._spot_divergence(symbol, day, marks)
        return trades, records

    def _metrics(self, symbol: str, day: date) -> list[Record]:
        path = self._fetch("metrics", symbol, day)
        if path is None:
            return []
        out: list[Record] = []
        mapping = (
            ("sum_open_interest", "open_interest_hist"),
            ("count_long_short_ratio", "long_short_account_ratio"),
            ("sum_toptrader_long_short_ratio", "top_trader_position_ratio"),
            ("sum_taker_long_short_vol_ratio", "taker_buy_sell_ratio"),
        )
        for line, row, header in _rows(path, self.report.add_bad_row):
            cols = header or [
                "create_time",
                "symbol",
                "sum_open_interest",
                "sum_open_interest_value",
                "count_toptrader_long_short_ratio",
                "sum_toptrader_long_short_ratio",
                "count_long_short_ratio",
                "sum_taker_long_short_vol_ratio",
            ]
            if len(row) != len(cols):
                self.report.add_bad_row(f"{path.name}:{line}: {len(row)} fields, expected {len(cols)}")
                continue
            field = dict(zip(cols, row))
            try:
                at = _ms(field.get("create_time", ""))
            except ValueError:
                self.report.add_bad_row(f"{path.name}:{line}: create_time {field.get('create_time')!r} is not a time")
                continue
            for column, kind in mapping:
                raw = field.get(column, "").strip()
                if not raw:
                    continue
                try:
                    value = float(raw)
                except ValueError:
                    self.report.add_bad_row(f"{path.name}:{line}: {column} {raw!r} is not a number")
                    continue
                if not math.isfinite(value):
                    self.report.add_bad_row(f"{path.name}:{line}: {column} {raw!r} is not finite")
                    continue
                extra: dict[str, float] = {}
                usd = field.get("sum_open_interest_value", "").strip()
                if kind == "open_interest_hist" and usd:
                    try:
                        extra["sum_open_interest_value"] = _finite(usd)
                    except ValueError:
                        self.report.add_bad_row(f"{path.name}:{line}: sum_open_interest_value {usd!r} is not a number")
                        continue
                elif kind in ("long_short_account_ratio", "top_trader_position_ratio") and value > 0:
                    extra = {"long_account": value / (1 + value), "short_account": 1 / (1 + value)}
                out.append(
                    {
                        "exchange": EXCHANGE,
                        "symbol": symbol,
                        "kind": kind,
                        "value": value,
                        "period": "5m",
                        "extra": extra,
                        "event_time": at,
                        "receive_time": at + self.indicator_delay_ms,
                    }
                )
        return out

    def _mark_klines(self, symbol: str, day: date) -> list[tuple[int, float]]:
        """(time the close is known = open time + 1 min, close) of each 1-minute mark price kline."""
        path = self._fetch("markPriceKlines", symbol, day)
        return self._klines(path) if path is not None else []

    def _klines(self, path: Path) -> list[tuple[int, float]]:
        out = []
        for line, row, _ in _rows(path, self.report.add_bad_row):
            try:
                out.append((_ms(row[0]) + MINUTE_MS, _finite(row[4])))
            except (ValueError, IndexError):
                self.report.add_bad_row(f"{path.name}:{line}: not a kline row: {','.join(row)[:120]!r}")
        return out

    def _settlements(self, symbol: str, day: date) -> list[tuple[int, float]]:
        """(funding time, rate) of the month of ``day`` (and the next one on its last day)."""
        out: list[tuple[int, float]] = []
        months = [day.replace(day=1)]
        if (day + timedelta(days=1)).month != day.month:  # the month's last day: the next settlement is next month
            months.append((day + timedelta(days=1)).replace(day=1))
        for month in months:
            key = (symbol, f"{month.year:04d}-{month.month:02d}")
            if key not in self._funding:
                self._funding[key] = []
                this_month = month == day.replace(day=1)
                path = self._fetch("fundingRate", symbol, month, required=this_month, listed=this_month)
                if path is not None:
                    for line, row, _ in _rows(path, self.report.add_bad_row):
                        try:
                            self._funding[key].append((_ms(row[0]), _finite(row[-1])))
                        except (ValueError, IndexError):
                            self.report.add_bad_row(f"{path.name}:{line}: not a funding row: {','.join(row)[:120]!r}")
            out += self._funding[key]
        return sorted(out)

    def _marks(
        self, symbol: str, day: date, start: int, klines: list[tuple[int, float]], trades: DayTrades | None
    ) -> list[Record]:
        settlements = self._settlements(symbol, day)
        if not settlements:
            return []
        times = [t for t, _ in settlements]
        rates = [r for _, r in settlements]

        def next_settlement(t: int) -> int | None:
            i = np.searchsorted(times, t, side="right")
            return int(i) if i < len(times) else None

        def record(t: int, mark: float, rate: float, funding_time: int) -> Record:
            return {
                "exchange": EXCHANGE,
                "symbol": symbol,
                "mark_price": mark,
                "index_price": mark,
                "funding_rate": rate,
                "next_funding_time": funding_time,
                "event_time": t,
                "receive_time": t,
            }

        out = []
        for t, close in klines:
            i = next_settlement(t)
            if i is None:
                continue
            out.append(record(t, close, rates[i - 1] if i > 0 else rates[i], times[i]))
        kline_times = [t for t, _ in klines]
        for funding_time, rate in settlements:  # the settled rate, just before its settlement
            if not start < funding_time <= start + DAY_MS:
                continue
            k = int(np.searchsorted(kline_times, funding_time - 1, side="right")) - 1
            if k >= 0:
                mark = klines[k][1]
            elif trades is not None and (last := trades.price_before(funding_time)) is not None:
                mark = last
                self.report.notes["mark_price"] = "from the last trade where mark price klines are missing"
            else:
                continue
            out.append(record(funding_time - 1, mark, rate, funding_time))
        return sorted(out, key=lambda r: r["event_time"])

    def _books(self, symbol: str, day: date) -> list[Record]:
        depth = self._book_depth(symbol, day)
        ticker = self._book_ticker(symbol, day)
        if not depth and not ticker:
            return []
        out = []
        depth_times = [t for t, _ in depth]
        if ticker:
            for t, bid, bid_qty, ask, ask_qty in ticker:
                k = int(np.searchsorted(depth_times, t, side="right")) - 1
                obi = depth[k][1] if k >= 0 else order_book_imbalance([(bid, bid_qty)], [(ask, ask_qty)], 1)
                out.append(self._book(symbol, t, [(bid, bid_qty)], [(ask, ask_qty)], obi))
            if not depth:
                self.report.notes["obi"] = "approximated from bookTicker: best bid/ask quantities only"
        else:
            out = [self._book(symbol, t, [], [], obi) for t, obi in depth]
        return out

    @staticmethod
    def _book(symbol: str, t: int, bids: list, asks: list, obi: float) -> Record:
        return {
            "exchange": EXCHANGE,
            "symbol": symbol,
            "last_update_id": t,
            "event_time": t,
            "receive_time": t,
            "bids": [{"price": p, "qty": q} for p, q in bids],
            "asks": [{"price": p, "qty": q} for p, q in asks],
            "obi_10": obi,
        }

    def _book_depth(self, symbol: str, day: date) -> list[tuple[int, float]]:
        path = self._fetch("bookDepth", symbol, day)
        if path is None:
            return []
        by_time: dict[int, dict[float, float]] = {}
        for line, row, _ in _rows(path, self.report.add_bad_row):
            try:
                by_time.setdefault(_ms(row[0]), {})[_finite(row[1])] = _finite(row[2])
            except (ValueError, IndexError):
                self.report.add_bad_row(f"{path.name}:{line}: not a bookDepth row: {','.join(row)[:120]!r}")
        out = []
        for t in sorted(by_time):
            bands = by_time[t]
            bid, ask = bands.get(-1.0), bands.get(1.0)
            if bid is not None and ask is not None and bid + ask > 0:
                out.append((t, (bid - ask) / (bid + ask)))
        return out

    def _book_ticker(self, symbol: str, day: date) -> list[tuple[int, float, float, float, float]]:
        path = self._fetch("bookTicker", symbol, day)
        if path is None:
            return []
        last: dict[int, tuple[int, float, float, float, float]] = {}  # second -> last update of it
        for line, row, _ in _rows(path, self.report.add_bad_row):
            try:
                t = _ms(row[5])
                last[t // 1000] = (t, _finite(row[1]), _finite(row[2]), _finite(row[3]), _finite(row[4]))
            except (ValueError, IndexError):
                self.report.add_bad_row(f"{path.name}:{line}: not a bookTicker row: {','.join(row)[:120]!r}")
        return [last[s] for s in sorted(last)]

    def _spot_divergence(self, symbol: str, day: date, marks: list[tuple[int, float]]) -> list[Record]:
        path = self._fetch("spotKlines", symbol, day) if marks else None
        if path is None:
            return []
        spot = dict(self._klines(path))
        out = []
        for t, perp in marks:
            if t % POLL_MS or t not in spot or spot[t] <= 0:
                continue
            out.append(
                {
                    "exchange": EXCHANGE,
                    "symbol": symbol,
                    "kind": "spot_perp_divergence",
                    "value": (perp - spot[t]) / spot[t],
                    "period": None,
                    "extra": {"perp_price": perp, "spot_price": spot[t]},
                    "event_time": t,
                    "receive_time": t,
                }
            )
        return out
