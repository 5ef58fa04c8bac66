"""Warm start: before a producer streams live, publish the last 25 h of history into md.* so a new engine
group has its 24-hour windows at once, minutes after `tapeflow up`, not a day later.

Per symbol, for the window [now − hours, now) (now = the exchange's server time):
- already in md.trades (a restarted stack whose broker kept its data): nothing to do;
- trades from the database when it holds the window without a hole (a stack whose broker lost its data);
- otherwise (the default) 1m klines for all but the last `detail_minutes` (62: what the engine's
  second buckets read, the 1-hour CVD and its slope), as md.indicators records of kind `kline_1m` that
  the engine applies as minute bars (`stream_apps.core.minute_bars`: exact for the 4h/24h CVD, the bars
  and the ATR; the feature records' `approx_until_ms` says where trade detail begins), then REST
  `/fapi/v1/aggTrades` by `fromId` for the detail span (1,000 per request, weight 20). At real rates that
  is ~260 requests for BTC/ETH/SOL/XRP at any hour, where paging the whole of today grew to ~6,000 late
  in the UTC day (half an hour and more under the weight limit);
- with `detail_minutes` 0, every trade: the Binance Vision daily archives for the complete UTC days
  (checksum-verified, cached; `producers.backfill`), then REST aggTrades for today;
- either way the live stream continues from the last id (the trade sequencer fills the seconds in
  between, as after any reconnect). Every request spends from the producer's shared weight budget
  (`rest.WeightBudget`, the warm start's share leaving headroom for the live repairs); an exchange that
  cannot be reached or refuses this location is reported (`unreachable`/`restricted`, one line of what
  to do) and retried with backoff (`WarmStart._get`);
- open interest and the three ratio series from the REST history endpoints (`/futures/data/*`, 5-minute
  periods), funding from `/fapi/v1/fundingRate` and the mark price from `/fapi/v1/markPriceKlines` (one
  md.mark record per minute, its funding the last settled rate), or the same from the database.

Everything is published in event-time order per symbol (the small series merged into the stream of
trades), each record stamped with the time it describes (a history row's receive time is its own
period time, as a live poll would have stamped it), with progress markers every chunk (source
`warm-start`) and, unless a replay clock takes over, a final marker when the symbol is done: an engine
group that waits for progress (`tapeflow engine --wait-for-progress`, what `up` starts) holds the symbol
until then and so evaluates the history in order before its first live evaluation. The sink stores the
history like any md.* record. `status` shows the progress (`WarmStart.describe`).

md.book and md.liquidations have no public history: an engine sees them from the live stream on.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import structlog

from producers.backfill.agg_trades_csv import AggTradeCsvReader, open_archive
from producers.backfill.errors import BackfillError
from producers.backfill.sources import VisionDownloader
from producers.backfill.vision_files import DEFAULT_BASE_URL
from producers.binance.indicator_parse import (
    IndicatorParseError,
    parse_funding_history,
    parse_klines_1m,
    parse_long_short_account_ratio,
    parse_mark_price_klines,
    parse_open_interest_hist,
    parse_server_time,
    parse_taker_buy_sell_ratio,
    parse_top_trader_position_ratio,
)
from producers.binance.parse import EXCHANGE, FrameError, parse_rest_agg_trade
from producers.binance.rest import RestClient, RestRejected, RestRestricted, RestUnavailable, origin
from schemas.catalogue import market_key
from tapeflow_runtime.progress import ProgressMarkers
from tapeflow_runtime.publisher import Publisher
from tapeflow_runtime.warm_start_span import WarmStartSpan, warm_start_span

log = structlog.get_logger("producer.warm_start")

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
PERIOD = "5m"
PERIOD_MS = 300_000
FUNDING_INTERVAL_MS = 8 * HOUR_MS
CHUNK = 5_000  # trades per publication step (records of the other inputs are merged in before each)
SERIES = (
    ("/futures/data/openInterestHist", parse_open_interest_hist),
    ("/futures/data/globalLongShortAccountRatio", parse_long_short_account_ratio),
    ("/futures/data/topLongShortPositionRatio", parse_top_trader_position_ratio),
    ("/futures/data/takerlongshortRatio", parse_taker_buy_sell_ratio),
)


@dataclass
class WarmStartConfig:
    hours: float = 25.0
    vision_url: str = DEFAULT_BASE_URL
    cache_dir: Path | None = None  # Vision downloads (default: no cache, a temporary directory)
    database_url: str | None = None  # read-only conninfo: history already stored by the sink
    # an exchange that cannot be reached or refuses this location: retried, the wait doubling up to the max
    retry_first_s: float = 5.0
    retry_max_s: float = 60.0
    request_budget_s: float = 5.0  # one request's own retries (RestClient) before the warm start reports it
    # trade by trade only for the last this many minutes (what the engine's second buckets read: the 1-hour
    # CVD and its slope, so an evaluation is valid at the live start); 1m klines before (minute bars: exact
    # for the 4h/24h CVD, bars and ATR; the size quantiles come from the detail). 0: every trade of the
    # window (Vision for the complete days, REST for today: its REST cost grows with the hour of the day)
    detail_minutes: float = 62.0


@dataclass
class SymbolPriming:
    symbol: str
    phase: str = "waiting"  # waiting | topics | database | klines | vision | rest | done | failed
    source: str = ""
    days_done: int = 0
    days_total: int = 0
    trades: int = 0
    records: int = 0
    last_agg_id: int | None = None
    error: str = ""
    # REST paging: the span it pages (event time), how far it has got, and since when (monotonic)
    rest_span: tuple[int, int] = (0, 0)
    rest_at_ms: int = 0
    rest_began: float = 0.0
    minute_bars: int = 0  # minutes primed from 1m klines (the rest trade by trade)

    def describe(self) -> str:
        if self.phase == "vision":
            return f"{self.symbol} vision {self.days_done}/{self.days_total} days, {self.trades:,} trades"
        if self.phase == "rest" and self.rest_at_ms > self.rest_span[0]:
            start, end = self.rest_span
            done = (self.rest_at_ms - start) / max(1, end - start)
            left = (time.monotonic() - self.rest_began) * (1 - done) / done
            return (
                f"{self.symbol} rest {self.trades:,} trades, {(self.rest_at_ms - start) / HOUR_MS:.1f} of "
                f"{(end - start) / HOUR_MS:.1f} h paged, ~{left / 60:.0f} min left at this rate"
            )
        if self.phase in ("rest", "database"):
            return f"{self.symbol} {self.phase} {self.trades:,} trades"
        if self.phase == "done":
            days = f" ({self.days_done}/{self.days_total} days)" if self.days_total else ""
            bars = f" after {self.minute_bars:,} minute bars" if self.minute_bars else ""
            return (
                f"{self.symbol} done ({self.source}{days}: {self.trades:,} trades{bars}, "
                f"{self.records - self.minute_bars:,} other records)"
            )
        if self.phase == "failed":
            return f"{self.symbol} FAILED: {self.error}"
        return f"{self.symbol} {self.phase}"


@dataclass
class _Series:
    """The small inputs of one symbol over the window, in event-time order, merged into the trades."""

    records: list[tuple[str, int, dict]] = field(default_factory=list)  # (topic, time, record)
    next: int = 0

    def until(self, time_ms: int) -> Iterator[tuple[str, dict]]:
        while self.next < len(self.records) and self.records[self.next][1] <= time_ms:
            topic, _, record = self.records[self.next]
            self.next += 1
            yield topic, record


class WarmStart:
    """Primes md.* with the last `hours` of every symbol before the live stream starts."""

    def __init__(
        self,
        config: WarmStartConfig,
        rest: RestClient,
        rest_base_url: str,
        publisher: Publisher,
        markers: ProgressMarkers,
        symbols: Iterable[str],
        *,
        in_topics: Callable[[str, int], bool] = lambda symbol, since_ms: False,
    ) -> None:
        self.config = config
        self.rest = rest
        self.rest_url = rest_base_url.rstrip("/")
        self.publisher = publisher
        self.markers = markers
        self.symbols = [s.upper() for s in symbols]
        self.in_topics = in_topics
        self.progress = {s: SymbolPriming(s) for s in self.symbols}
        self.started: float | None = None
        self.finished: float | None = None
        # (status word, one-line message) while the exchange cannot be reached or refuses this location
        self.trouble: tuple[str, str] | None = None
        self.retries = 0  # requests repeated after such an answer
        self.span: WarmStartSpan | None = None  # the window and where trade detail begins (once `run` asked)

    def describe(self) -> str:
        if self.trouble is not None:
            return self.trouble[1]
        took = "" if self.started is None else f" ({(self.finished or time.monotonic()) - self.started:.0f} s)"
        return "warm start" + took + ": " + "; ".join(p.describe() for p in self.progress.values())

    async def _get(self, url: str, params: dict[str, Any] | None = None) -> tuple[Any, int]:
        """`RestClient.get_json`, repeated for as long as the exchange cannot be reached (DNS, refused
        connection, 5xx) or refuses this location (451/403): each time `trouble` holds the status word
        and the one line that says what to do, logged once per kind; the wait doubles from
        `retry_first_s` to `retry_max_s`. A warm start never gives up on its own: without its first
        answer there is nothing to stream either, and the producer must not die in a restart loop."""
        delay = self.config.retry_first_s
        while True:
            try:
                answer = await self.rest.get_json(url, params)
            except RestRestricted as exc:
                self._trouble("restricted", restricted_message(exc, self.rest_url, delay))
            except RestUnavailable as exc:
                if exc.reason == "rate-limited":  # the gate's window: wait it out quietly
                    await asyncio.sleep(1.0)
                    continue
                self._trouble("unreachable", unreachable_message(exc, self.rest_url, delay))
            else:
                if self.trouble is not None:
                    log.info("exchange answers again; warm start continues", url=origin(url))
                    self.trouble = None
                return answer
            self.retries += 1
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.config.retry_max_s)

    def _trouble(self, word: str, message: str) -> None:
        if self.trouble is None or self.trouble[0] != word:
            log.error(message)  # one line, no traceback: what happened and what to do
        self.trouble = (word, message)

    @property
    def done(self) -> bool:
        return self.finished is not None

    # ------------------------------------------------------------------------------------------
    async def run(self, final_markers: bool = True) -> dict[str, int]:
        """Prime every symbol; returns the last agg id published per symbol (the live stream goes on from it)."""
        self.started = time.monotonic()
        body, _ = await self._get(f"{self.rest_url}/fapi/v1/time")
        self.span = span = warm_start_span(parse_server_time(body), self.config.hours, self.config.detail_minutes)
        last: dict[str, int] = {}
        # a restarted stack whose broker kept its topics: md.trades holds every trade from where a start
        # from minute bars took them one by one (the bars are on md.indicators), or from the window's start
        trades_since = span.since_ms if span.detail_from_ms is None else span.detail_from_ms
        for symbol in self.symbols:
            state = self.progress[symbol]
            try:
                if await asyncio.to_thread(self.in_topics, symbol, trades_since):
                    state.phase, state.source = "done", "already in md.trades"
                    continue
                agg_id = await self._prime(symbol, span, state)
                if agg_id is not None:
                    last[symbol] = agg_id
                state.phase = "done"
            except (RestUnavailable, RestRejected, BackfillError, FrameError, IndicatorParseError, OSError) as exc:
                state.phase, state.error = "failed", f"{type(exc).__name__}: {exc}"
                log.error(
                    "warm start failed for a symbol; it warms up from the live stream", symbol=symbol, error=state.error
                )
        await asyncio.to_thread(self.publisher.flush, 60.0)
        if final_markers:
            await asyncio.to_thread(self.markers.finish, [market_key(EXCHANGE, s) for s in self.symbols])
        else:
            self.markers.publish_ready()
        self.finished = time.monotonic()
        log.info("warm start finished", seconds=round(self.finished - self.started, 1), detail=self.describe())
        return last

    async def _prime(self, symbol: str, span: WarmStartSpan, state: SymbolPriming) -> int | None:
        key = market_key(EXCHANGE, symbol)
        since_ms, now_ms = span.since_ms, span.now_ms
        stored = await asyncio.to_thread(self._from_database, symbol, since_ms, now_ms)
        if stored is not None:
            trades, series = stored
            state.phase, state.source = "database", "database"
        else:
            series = await self._series(symbol, since_ms, now_ms)
            trades = None
            state.source = "vision+rest"
        trades_from_ms = since_ms
        if trades is None and span.detail_from_ms is not None:
            # minute bars for all but the last `detail_minutes`, which come trade by trade (REST)
            trades_from_ms = span.detail_from_ms
            bars = await self._minute_bars(symbol, span, state)
            series.records = sorted(series.records + bars, key=lambda r: r[1])
            state.source = "klines+rest"
        last_id: int | None = None
        pending: list[dict] = []

        def flush(up_to: int | None) -> None:
            nonlocal pending
            for trade in pending:
                for topic, record in series.until(trade["trade_time"]):
                    self.publisher.publish(topic, key, record, None)
                    state.records += 1
                self.publisher.publish("md.trades", key, trade, None)
            if pending:
                self.markers.mark(key, pending[-1]["trade_time"] - 1)
                if self.markers.has_ready:
                    self.markers.publish_ready()
            state.trades += len(pending)
            pending = []
            self.publisher.poll(0)

        async for trade in (
            self._database_trades(symbol, trades, now_ms, state)
            if trades is not None
            else self._exchange_trades(symbol, trades_from_ms, now_ms, state, vision=trades_from_ms == since_ms)
        ):
            if last_id is not None and trade["agg_id"] <= last_id:
                continue  # an overlap between an archive and REST
            pending.append(trade)
            last_id = trade["agg_id"]
            if len(pending) >= CHUNK:
                flush(None)
                await asyncio.sleep(0)
        flush(None)
        for topic, record in series.until(now_ms):
            self.publisher.publish(topic, key, record, None)
            state.records += 1
        self.markers.mark(key, now_ms - 1)
        state.last_agg_id = last_id
        return last_id

    # --- trades from the exchange ---------------------------------------------------------------
    async def _exchange_trades(
        self, symbol: str, since_ms: int, now_ms: int, state: SymbolPriming, *, vision: bool = True
    ):
        today = _day(now_ms)
        days = [d for d in _days(since_ms, now_ms) if d < today] if vision else []
        state.phase, state.days_total = "vision", len(days)
        last: int | None = None
        rest_from_ms = since_ms
        for day in days:
            rows = await asyncio.to_thread(self._vision_day, symbol, day, since_ms, now_ms)
            if rows is None:  # no archive: REST from the start of that day on
                rest_from_ms = max(since_ms, _day_start(day))
                break
            for trade in rows:
                if since_ms <= trade["trade_time"] < now_ms:
                    last = trade["agg_id"]
                    yield trade
            state.days_done += 1
            rest_from_ms = _day_start(day) + DAY_MS
        state.phase = "rest"
        state.rest_span, state.rest_began = (rest_from_ms, now_ms), time.monotonic()
        async for trade in self._rest_trades(symbol, last, rest_from_ms, now_ms):
            state.rest_at_ms = trade["trade_time"]
            yield trade

    def _vision_day(self, symbol: str, day: date, since_ms: int, now_ms: int) -> list[dict] | None:
        """The day's archived trades inside the window (only those are kept: a whole BTCUSDT day at real
        rates is ~2.6 M rows, of which a start late in the UTC day needs the last hour or two)."""
        cache = self.config.cache_dir
        if cache is None:
            import tempfile

            cache = Path(tempfile.gettempdir()) / "tapeflow-warm-start"
        archive = VisionDownloader(self.config.vision_url, cache).fetch(symbol, day)
        if archive is None:
            return None
        received = int(time.time() * 1000)
        with open_archive(archive.path) as (stream, _size):
            reader = AggTradeCsvReader(
                stream,
                source=archive.path.name,
                symbol=symbol,
                receive_time=received,
                on_bad=lambda bad: log.warning("bad archive row skipped", row=str(bad)),
            )
            rows = [row for row in reader if since_ms <= row["trade_time"] < now_ms]
        for row in rows:
            row["receive_time"] = row["trade_time"]
        return rows

    async def _rest_trades(self, symbol: str, last_id: int | None, from_ms: int, now_ms: int):
        url = f"{self.rest_url}/fapi/v1/aggTrades"
        if last_id is None:  # find the first trade at or after from_ms, an hour at a time (Binance's limit)
            start = from_ms
            while start < now_ms and last_id is None:
                rows, received = await self._get(
                    url, {"symbol": symbol, "startTime": start, "endTime": min(start + HOUR_MS, now_ms) - 1, "limit": 1}
                )
                if rows:
                    last_id = parse_rest_agg_trade(_first(rows), symbol, received)["agg_id"] - 1
                start += HOUR_MS
            if last_id is None:
                return
        while True:
            rows, received = await self._get(url, {"symbol": symbol, "fromId": last_id + 1, "limit": 1000})
            for row in rows:
                trade = parse_rest_agg_trade(row, symbol, received)
                if trade["trade_time"] >= now_ms:
                    return
                trade["receive_time"] = trade["trade_time"]
                last_id = trade["agg_id"]
                yield trade
            if len(rows) < 1000:
                return  # caught up with the exchange: the live stream takes over

    async def _minute_bars(self, symbol: str, span: WarmStartSpan, state: SymbolPriming) -> list[tuple[str, int, dict]]:
        """1m klines of the span's bar minutes (`span.bar_minutes()`; 1,500 a request, weight 10) as
        md.indicators records of kind `kline_1m` (`stream_apps.core.minute_bars`: the engine applies them as
        minute bars), each stamped with its last millisecond (Binance's close time)."""
        state.phase = "klines"
        out: list[tuple[str, int, dict]] = []
        start, until_ms = span.bars_from_ms, span.detail_from_ms or span.bars_from_ms
        while start < until_ms:
            rows, _ = await self._get(
                f"{self.rest_url}/fapi/v1/klines",
                {"symbol": symbol, "interval": "1m", "startTime": start, "endTime": until_ms - 1, "limit": 1500},
            )
            for record in parse_klines_1m(rows, symbol):
                if start <= record["event_time"] < until_ms:
                    out.append(("md.indicators", record["receive_time"], record))
            if len(rows) < 1500:
                break
            start = int(rows[-1][0]) + 60_000
        state.minute_bars = len(out)
        return out

    # --- the other inputs from the exchange -----------------------------------------------------------
    async def _series(self, symbol: str, since_ms: int, now_ms: int) -> _Series:
        out: list[tuple[str, int, dict]] = []
        for path, parse in SERIES:
            body, _ = await self._get(
                f"{self.rest_url}{path}",
                {"symbol": symbol, "period": PERIOD, "startTime": since_ms, "endTime": now_ms, "limit": 500},
            )
            for record in parse(body, symbol, PERIOD, 0):
                record["receive_time"] = record["event_time"]  # known at its own time, as a live poll saw it
                out.append(("md.indicators", record["event_time"], record))
        funding, _ = await self._get(
            f"{self.rest_url}/fapi/v1/fundingRate",
            {"symbol": symbol, "startTime": since_ms - FUNDING_INTERVAL_MS, "endTime": now_ms, "limit": 1000},
        )
        settled = parse_funding_history(funding, symbol)
        klines, _ = await self._get(
            f"{self.rest_url}/fapi/v1/markPriceKlines",
            {"symbol": symbol, "interval": "1m", "startTime": since_ms, "endTime": now_ms, "limit": 1500},
        )
        rate, i = 0.0, 0
        for open_ms, price in parse_mark_price_klines(klines, symbol):
            close_ms = open_ms + 60_000
            if close_ms > now_ms:
                break
            while i < len(settled) and settled[i][0] <= close_ms:
                rate = settled[i][1]
                i += 1
            out.append(
                (
                    "md.mark",
                    close_ms,
                    {
                        "exchange": EXCHANGE,
                        "symbol": symbol,
                        "mark_price": price,
                        "index_price": price,
                        "funding_rate": rate,
                        "next_funding_time": (close_ms // FUNDING_INTERVAL_MS + 1) * FUNDING_INTERVAL_MS,
                        "event_time": close_ms,
                        "receive_time": close_ms,
                    },
                )
            )
        out.sort(key=lambda r: r[1])
        return _Series(out)

    # --- the database ---------------------------------------------------------------------------------
    def _from_database(self, symbol: str, since_ms: int, now_ms: int) -> tuple[list[dict], _Series] | None:
        """The window's trades (and series) when the database holds them from its start without a hole."""
        if not self.config.database_url:
            return None
        import psycopg
        from psycopg.rows import dict_row

        since, now = _ts(since_ms), _ts(now_ms)
        try:
            with psycopg.connect(self.config.database_url, row_factory=dict_row, connect_timeout=5) as conn:
                trades = conn.execute(
                    "SELECT exchange, symbol, agg_id, price, qty, first_trade_id, last_trade_id, event_time, "
                    "trade_time, taker_side FROM trades WHERE exchange = %s AND symbol = %s AND trade_time >= %s "
                    "AND trade_time < %s ORDER BY agg_id",
                    (EXCHANGE, symbol, since, now),
                ).fetchall()
                if (
                    not trades
                    or _ms(trades[0]["trade_time"]) > since_ms + 60_000
                    or trades[-1]["agg_id"] - trades[0]["agg_id"] + 1 != len(trades)
                ):
                    return None  # not from the window's start, or with a hole: fetch from the exchange
                marks = conn.execute(
                    "SELECT exchange, symbol, mark_price, index_price, funding_rate, next_funding_time, event_time, "
                    "receive_time FROM mark_prices WHERE exchange = %s AND symbol = %s AND event_time >= %s "
                    "AND event_time < %s ORDER BY event_time",
                    (EXCHANGE, symbol, since, now),
                ).fetchall()
                indicators = conn.execute(
                    "SELECT exchange, symbol, kind, value, period, extra, event_time, receive_time FROM "
                    "market_indicators WHERE exchange = %s AND symbol = %s AND receive_time >= %s AND "
                    "receive_time < %s AND kind <> 'kline_1m' ORDER BY receive_time",  # (trades here: no bars)
                    (EXCHANGE, symbol, since, now),
                ).fetchall()
        except psycopg.Error as exc:
            log.warning("database not usable for the warm start; fetching from the exchange", error=str(exc))
            return None
        out = [_plain(t, ("event_time", "trade_time")) | {"receive_time": _ms(t["trade_time"])} for t in trades]
        series = [
            ("md.mark", _ms(m["event_time"]), _plain(m, ("next_funding_time", "event_time", "receive_time")))
            for m in marks
        ]
        series += [
            (
                "md.indicators",
                _ms(r["receive_time"]),
                _plain(r, ("event_time", "receive_time"))
                | {"extra": {k: float(v) for k, v in (r["extra"] or {}).items()}},
            )
            for r in indicators
        ]
        series.sort(key=lambda r: r[1])
        return out, _Series(series)

    async def _database_trades(self, symbol: str, trades: list[dict], now_ms: int, state: SymbolPriming):
        """The stored trades, then REST from the last stored id on (the database lags the exchange)."""
        for trade in trades:
            yield trade
        state.source = "database+rest"
        async for trade in self._rest_trades(symbol, trades[-1]["agg_id"], trades[-1]["trade_time"], now_ms):
            yield trade


OFFLINE_HINT = "or run offline from a recording: tapeflow up --source replay:DIR"


def unreachable_message(exc: RestUnavailable, rest_url: str, retry_s: float) -> str:
    """The one line for an exchange that does not answer (DNS, refused connection, 5xx)."""
    return (
        f"unreachable: the warm start cannot reach the exchange at {origin(rest_url)} ({exc}); check this "
        "machine's network, point `tapeflow produce --rest-url/--ws-url` at a reachable Binance endpoint, "
        f"{OFFLINE_HINT}. Retrying in {retry_s:g} s."
    )


def restricted_message(exc: RestRestricted, rest_url: str, retry_s: float) -> str:
    """The one line for an exchange that refuses this machine: 451 (a restricted location) or 403 (blocked)."""
    why = (
        "refuses this location (HTTP 451: Binance does not serve restricted countries, the US among them)"
        if exc.status == 451
        else "refuses this client (HTTP 403: blocked)"
    )
    return (
        f"restricted: the exchange at {origin(rest_url)} {why}; use a venue you may use, point "
        f"`tapeflow produce --rest-url/--ws-url` at an endpoint that serves you, {OFFLINE_HINT}. "
        f"Retrying in {retry_s:g} s."
    )


def _first(rows: Any) -> Any:
    """The first row of an aggTrades body, or a FrameError when the body is not a JSON array."""
    if not isinstance(rows, list):
        raise FrameError(f"aggTrades body is a {type(rows).__name__}, not a JSON array")
    return rows[0]


def _plain(row: dict[str, Any], time_columns: tuple[str, ...]) -> dict[str, Any]:
    return {k: (_ms(v) if k in time_columns else v) for k, v in row.items()}


def _ms(value: datetime) -> int:
    return round(value.timestamp() * 1000)


def _ts(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def _day(ms: int) -> date:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).date()


def _day_start(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)


def _days(start_ms: int, end_ms: int) -> list[date]:
    first, last = _day(start_ms), _day(end_ms - 1)
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def trades_in_topics(
    bootstrap: str, topic_prefix: str, serde: Any, timeout_s: float = 15.0
) -> Callable[[str, int], bool]:
    """`(symbol, since_ms) -> bool`: does md.trades already hold the symbol from `since_ms` on (its first
    trade stamped at or after then is within a minute of it)? Then a warm start has nothing to do."""
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    from tapeflow_runtime.kafka_client import HISTORY_FETCH_CONFIG, consumer_config
    from tapeflow_runtime.offsets import offsets_at_or_after

    def check(symbol: str, since_ms: int) -> bool:
        topic, key = topic_prefix + "md.trades", market_key(EXCHANGE, symbol).encode()
        consumer = Consumer(consumer_config(bootstrap, **{"enable.partition.eof": True, **HISTORY_FETCH_CONFIG}))
        try:
            metadata = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
            if metadata is None or not metadata.partitions:
                return False
            starts = offsets_at_or_after(bootstrap, [(topic, p) for p in metadata.partitions], since_ms, timeout_s)
            consumer.assign([TopicPartition(t, p, o) for (t, p), o in starts.items()])
            open_parts, deadline = set(starts), time.monotonic() + timeout_s
            while open_parts and time.monotonic() < deadline:
                m = consumer.poll(0.2)
                if m is None:
                    continue
                tp = (m.topic(), m.partition())
                if m.error():
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        open_parts.discard(tp)
                    continue
                if m.key() != key:
                    continue
                trade_time = serde.decode(m.value()).get("trade_time", 0)
                if trade_time >= since_ms:  # the first of the window: is it the window's start?
                    return trade_time <= since_ms + 60_000
            return False
        finally:
            consumer.close()

    return check
