"""Every few minutes, poll the REST-only market indicators and publish them on `md.indicators`.

Open interest, the long/short ratios and the taker buy/sell ratio exist only as REST endpoints, and
the Coinbase premium and spot–perp divergence need prices from other venues, so this is the one
producer part that polls. What it guarantees:

- One failure costs one endpoint, not the tick: a `RestUnavailable`/`RestRejected` or a malformed
  body (`IndicatorParseError`) is logged, counted in
  `tapeflow_producer_poll_errors_total{endpoint}` and skipped; the values that depend on it (the
  Coinbase premium needs premiumIndex *and* the Coinbase ticker) are skipped too; the poller itself
  never stops on them.
- Rate limits: requests go one at a time, `stagger_s` apart (4 symbols make 31 requests, spread
  over ~6 s instead of a burst); 429/418 back-off and the used-weight brake live in `RestClient`.
- The 5-minute series (`/futures/data/*`) are asked for the last `history_limit` periods, so a
  missed tick is caught up on the next one, and only rows newer than the last published one per
  (symbol, kind) are published: the topic gets each period once, not `history_limit` times.
  Point values (open interest, funding, premium, divergence) are published on every tick.
- Once per tick `/fapi/v1/time` is compared with the local clock at the request's midpoint and
  `tapeflow_producer_clock_drift_seconds` (local − server) is set.

Sleep and wall clock are injected so tests can drive ticks without waiting. The parsing is pure and
lives in :mod:`producers.binance.indicator_parse`.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter

from producers.binance.indicator_parse import (
    IndicatorParseError,
    PricePoint,
    coinbase_last_price,
    coinbase_premium,
    parse_funding_rate,
    parse_long_short_account_ratio,
    parse_open_interest,
    parse_open_interest_hist,
    parse_server_time,
    parse_taker_buy_sell_ratio,
    parse_top_trader_position_ratio,
    perp_mark_price,
    spot_mid_price,
    spot_perp_divergence,
)
from producers.binance.parse import EXCHANGE
from producers.binance.rest import RestClient, RestRejected, RestUnavailable
from producers.metrics import ProducerMetrics
from schemas.catalogue import market_key

log = structlog.get_logger("producer.pollers")

TOPIC = "md.indicators"
BINANCE_FUTURES_URL = "https://fapi.binance.com"
BINANCE_SPOT_URL = "https://api.binance.com"
COINBASE_URL = "https://api.exchange.coinbase.com"
# Coinbase lists USD books for the majors only; the old system crashed asking for XRP/SOL (P2-1).
DEFAULT_COINBASE_PRODUCTS: Mapping[str, str] = {"BTCUSDT": "BTC-USD", "ETHUSDT": "ETH-USD"}
DRIFT_WARN_S = 1.0

Publish = Callable[[str, str, dict, int], None]
Parser = Callable[[Any, str, str, int], list[dict]]

# The `endpoint` label values of the error counter and the kinds each endpoint feeds.
SERIES_ENDPOINTS: tuple[tuple[str, str, Parser], ...] = (
    ("openInterestHist", "/futures/data/openInterestHist", parse_open_interest_hist),
    ("globalLongShortAccountRatio", "/futures/data/globalLongShortAccountRatio", parse_long_short_account_ratio),
    ("topLongShortPositionRatio", "/futures/data/topLongShortPositionRatio", parse_top_trader_position_ratio),
    ("takerlongshortRatio", "/futures/data/takerlongshortRatio", parse_taker_buy_sell_ratio),
)
ENDPOINT_KINDS: Mapping[str, tuple[str, ...]] = {
    "time": (),
    "premiumIndex": ("funding_rate", "spot_perp_divergence", "coinbase_premium"),
    "spot_bookTicker": ("spot_perp_divergence",),
    "coinbase_ticker": ("coinbase_premium",),
    "openInterest": ("open_interest",),
    "openInterestHist": ("open_interest_hist",),
    "globalLongShortAccountRatio": ("long_short_account_ratio",),
    "topLongShortPositionRatio": ("top_trader_position_ratio",),
    "takerlongshortRatio": ("taker_buy_sell_ratio",),
    "unexpected": (),  # a bug in a tick: logged with its traceback, the poller carries on
}

_poll_error_counters: weakref.WeakKeyDictionary[CollectorRegistry, Counter] = weakref.WeakKeyDictionary()


def poll_errors_counter(registry: CollectorRegistry) -> Counter:
    """`tapeflow_producer_poll_errors_total{endpoint}` in `registry` (one per registry, so a second
    poller on the same metrics reuses it instead of failing on a duplicate name)."""
    counter = _poll_error_counters.get(registry)
    if counter is None:
        counter = Counter(
            "tapeflow_producer_poll_errors_total",
            "Indicator REST polls that failed (unavailable, rejected or malformed)",
            ["endpoint"],
            registry=registry,
        )
        for endpoint in ENDPOINT_KINDS:
            counter.labels(endpoint)  # export zeros, so a rate() exists before the first failure
        _poll_error_counters[registry] = counter
    return counter


class _Stopped(Exception):
    """The stop event was set between two requests of a tick."""


class IndicatorPoller:
    """Polls the indicator endpoints for `symbols` every `interval_s` and publishes on `md.indicators`."""

    def __init__(
        self,
        rest: RestClient,
        *,
        symbols: Sequence[str],
        publish: Publish,
        metrics: ProducerMetrics,
        futures_url: str = BINANCE_FUTURES_URL,
        spot_url: str = BINANCE_SPOT_URL,
        coinbase_url: str = COINBASE_URL,
        interval_s: float = 300.0,
        period: str = "5m",
        history_limit: int = 12,
        stagger_s: float = 0.2,
        coinbase_products: Mapping[str, str] | None = None,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        clock: Callable[[], float] = time.time,
        exchange_clock: bool = False,
        as_of: Callable[[], int] | None = None,
    ) -> None:
        """``exchange_clock``: stamp receive times on the exchange's clock (local minus the drift
        measured each tick) instead of the local one. For replays of a recorded session, whose
        exchange clock is years behind ours: the engine orders indicators by receive time, and a
        2026 receive time next to 2021 trades would make every later trade late.

        ``as_of``: a replay's clock (the newest event time the producer has processed). Every answer
        is then stamped with it, requests go out without stagger and the drift check is skipped: the
        tick's records depend on the recording alone, not on wall-clock timing."""
        if interval_s <= 0 or stagger_s < 0 or not 1 <= history_limit <= 500:
            raise ValueError("need interval_s > 0, stagger_s >= 0 and 1 <= history_limit <= 500")
        self.rest = rest
        self.symbols = [s.upper() for s in symbols]
        self.publish = publish
        self.metrics = metrics
        self.futures_url = futures_url.rstrip("/")
        self.spot_url = spot_url.rstrip("/")
        self.coinbase_url = coinbase_url.rstrip("/")
        self.interval_s = interval_s
        self.period = period
        self.history_limit = history_limit
        self.stagger_s = stagger_s
        self.coinbase_products = dict(DEFAULT_COINBASE_PRODUCTS if coinbase_products is None else coinbase_products)
        self._sleep = sleep
        self._clock = clock
        self.exchange_clock = exchange_clock
        self.as_of = as_of
        if as_of is not None:
            self.stagger_s = 0.0
        self.poll_errors = poll_errors_counter(metrics.registry)
        self.last_clock_drift_s: float | None = None
        self.published = 0
        self._last_series_time: dict[tuple[str, str], int] = {}
        self._requests_in_tick = 0
        self._stop: asyncio.Event | None = None

    # -- scheduling -------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Tick now and then every `interval_s` (measured start to start) until `stop` is set."""
        while not stop.is_set():
            started = self._clock()
            try:
                await self.run_once(stop)
            except Exception:  # a bug in one tick must not end the polling
                self.poll_errors.labels("unexpected").inc()
                log.exception("indicator poll tick failed")
            await self._wait(self.interval_s - (self._clock() - started), stop)

    async def run_once(self, stop: asyncio.Event | None = None) -> int:
        """One tick: clock drift, then every endpoint for every symbol. Returns records published."""
        self._stop = stop
        self._requests_in_tick = 0
        before = self.published
        try:
            if self.as_of is None:
                await self._measure_clock_drift()
            for symbol in self.symbols:
                await self._poll_symbol(symbol)
        except _Stopped:
            log.info("indicator poll interrupted by stop")
        finally:
            self._stop = None
        return self.published - before

    async def _wait(self, delay: float, stop: asyncio.Event | None) -> None:
        """Sleep `delay` seconds (injected sleep) unless `stop` is set first."""
        if delay <= 0 or (stop is not None and stop.is_set()):
            return
        if stop is None:
            await self._sleep(delay)
            return
        sleeper = asyncio.ensure_future(self._sleep(delay))
        stopper = asyncio.ensure_future(stop.wait())
        _, pending = await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    # -- one tick ---------------------------------------------------------------------------------
    async def _get(self, endpoint: str, url: str, params: dict[str, Any] | None = None) -> tuple[Any, int] | None:
        """GET with the stagger before it; None (counted) when the endpoint is unavailable or rejects."""
        if self._requests_in_tick:
            await self._wait(self.stagger_s, self._stop)
        if self._stop is not None and self._stop.is_set():
            raise _Stopped
        self._requests_in_tick += 1
        try:
            body, received = await self.rest.get_json(url, params)
        except (RestUnavailable, RestRejected) as exc:
            self._failed(endpoint, exc)
            return None
        if self.as_of is not None:
            received = self.as_of()
        elif self.exchange_clock and self.last_clock_drift_s is not None:
            received = round(received - self.last_clock_drift_s * 1000)
        return body, received

    def _failed(self, endpoint: str, exc: Exception) -> None:
        self.poll_errors.labels(endpoint).inc()
        log.warning("indicator poll failed", endpoint=endpoint, error=f"{type(exc).__name__}: {exc}")

    def _parse(self, endpoint: str, parse: Callable[..., Any], *args: Any) -> Any:
        """`parse(*args)`, or None (counted) when the body is malformed."""
        try:
            return parse(*args)
        except IndicatorParseError as exc:
            self._failed(endpoint, exc)
            return None

    async def _measure_clock_drift(self) -> None:
        before = self._clock()
        got = await self._get("time", f"{self.futures_url}/fapi/v1/time")
        after = self._clock()
        if got is None:
            return
        server_ms = self._parse("time", parse_server_time, got[0])
        if server_ms is None:
            return
        drift = (before + after) / 2 - server_ms / 1000
        self.last_clock_drift_s = drift
        self.metrics.clock_drift.set(drift)
        if abs(drift) > DRIFT_WARN_S:
            log.warning("local clock differs from Binance", drift_s=round(drift, 3))

    async def _poll_symbol(self, symbol: str) -> None:
        params = {"symbol": symbol}
        mark: PricePoint | None = None
        got = await self._get("premiumIndex", f"{self.futures_url}/fapi/v1/premiumIndex", params)
        if got is not None:
            body, received = got
            mark = self._parse("premiumIndex", perp_mark_price, body, symbol, received)
            if mark is not None:
                self._publish(symbol, self._parse("premiumIndex", parse_funding_rate, body, symbol, received))

        # the other venues right after the mark price, so the two prices compared are seconds apart
        got = await self._get("spot_bookTicker", f"{self.spot_url}/api/v3/ticker/bookTicker", params)
        if got is not None:
            body, received = got
            spot = self._parse("spot_bookTicker", spot_mid_price, body, symbol, received)
            if spot is not None and mark is not None:
                self._publish(symbol, spot_perp_divergence(symbol, mark, spot))

        product = self.coinbase_products.get(symbol)
        if product is not None:
            got = await self._get("coinbase_ticker", f"{self.coinbase_url}/products/{product}/ticker")
            if got is not None:
                body, received = got
                coinbase = self._parse("coinbase_ticker", coinbase_last_price, body, product, received)
                if coinbase is not None and mark is not None:
                    self._publish(symbol, coinbase_premium(symbol, coinbase, mark))

        got = await self._get("openInterest", f"{self.futures_url}/fapi/v1/openInterest", params)
        if got is not None:
            body, received = got
            self._publish(symbol, self._parse("openInterest", parse_open_interest, body, symbol, received))

        series_params = {"symbol": symbol, "period": self.period, "limit": self.history_limit}
        for endpoint, path, parser in SERIES_ENDPOINTS:
            got = await self._get(endpoint, f"{self.futures_url}{path}", series_params)
            if got is not None:
                body, received = got
                rows = self._parse(endpoint, parser, body, symbol, self.period, received)
                self._publish(symbol, self._new_rows(rows), series=True)

    def _new_rows(self, rows: list[dict] | None) -> list[dict]:
        """Series rows newer than the last one published for their (symbol, kind), oldest first."""
        if not rows:
            return []
        fresh = []
        for row in sorted(rows, key=lambda r: r["event_time"]):
            if row["event_time"] > self._last_series_time.get((row["symbol"], row["kind"]), -1):
                fresh.append(row)
        return fresh

    def _publish(self, symbol: str, records: Iterable[dict] | None, *, series: bool = False) -> None:
        for record in records or ():
            try:
                self.publish(TOPIC, market_key(EXCHANGE, symbol), record, record["receive_time"])
            except Exception:  # the publisher's failure must not end the polling
                self.poll_errors.labels("unexpected").inc()
                log.exception("indicator publish failed", symbol=symbol, kind=record["kind"])
                continue
            self.published += 1
            if series:
                self._last_series_time[(symbol, record["kind"])] = record["event_time"]
