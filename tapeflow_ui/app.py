"""The web application: pages (Jinja2 templates, no inline script), JSON views and a server-sent
event stream, behind ``TokenGuard``.

Why Starlette (and uvicorn): a small, well-kept ASGI toolkit with routing, static files, templates and
streaming responses and nothing else (no ORM, no auth model); sync endpoints run in its thread pool,
so each view is one plain psycopg query on a pooled read-only connection (``psycopg_pool``).
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

import orjson
from psycopg_pool import ConnectionPool
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from tapeflow_ui import desk
from tapeflow_ui import overview as ov
from tapeflow_ui import queries as q
from tapeflow_ui.actions import Actions, action_routes
from tapeflow_ui.degradation import degradation_routes
from tapeflow_ui.live import VIEWS, BarFold, LiveFollower, Throttle
from tapeflow_ui.security import TokenGuard, csrf_value
from tapeflow_ui.trade import checked_position, trade_api_routes

HERE = Path(__file__).parent
SYMBOL = re.compile(r"^[A-Z0-9]{2,30}$")
VENUE = re.compile(r"^[a-z0-9]{2,20}$")
MAX_RANGE_S = 7 * 86_400
LOOPBACK_HOSTS = ["127.0.0.1", "localhost", "[::1]", "::1"]
#: the live stream looks this often whether its page is still there, and says it is alive this often
DISCONNECT_CHECK_S = 1.0
KEEP_ALIVE_S = 15.0
#: the overview and the desk re-read the database when their topics say something changed: at most
#: this often per page (the overview's queries are the heavier ones)
REFRESH_S = {"overview": 5.0, "desk": 3.0}
#: and this long after the first record of a change, so that the sink has stored it (Kafka answers the
#: sink's waiting fetch as soon as the record is there; then its 250 ms batch and the commit)
SETTLE_S = 1.5
#: without the broker's topics: a re-read this often
POLL_S = 10.0


class ORJSONResponse(JSONResponse):
    def render(self, content) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


def _symbol(request: Request) -> str:
    symbol = (request.query_params.get("symbol") or request.path_params.get("symbol") or "").upper()
    if not SYMBOL.match(symbol):
        raise HTTPException(400, "symbol: letters and digits, e.g. BTCUSDT")
    return symbol


def _timeframe(request: Request) -> str:
    tf = request.query_params.get("tf", "1m")
    if tf not in q.TIMEFRAMES:
        raise HTTPException(400, f"tf: one of {', '.join(q.TIMEFRAMES)}")
    return tf


def _number(request: Request, name: str) -> float | None:
    raw = request.query_params.get(name)
    if raw in (None, ""):
        return None
    try:
        value = float(raw)
    except ValueError:
        raise HTTPException(400, f"{name}: a number") from None
    if not value == value or value in (float("inf"), float("-inf")):
        raise HTTPException(400, f"{name}: a finite number")
    return value


class UI:
    """The views over one read-only connection pool."""

    def __init__(
        self,
        pool: ConnectionPool,
        lag: ov.LagWatch | None = None,
        live: LiveFollower | None = None,
        refresh_s: dict[str, float] | None = None,
        settle_s: float = SETTLE_S,
        poll_s: float = POLL_S,
    ) -> None:
        self.pool = pool
        self.lag = lag
        self.live = live  # the stream follows the topics (None: it polls the database)
        self.refresh_s, self.settle_s, self.poll_s = {**REFRESH_S, **(refresh_s or {})}, settle_s, poll_s
        #: set when the server begins to shut down (``service.run_ui``): open streams end within a second,
        #: so a graceful shutdown is not held by a page left open
        self.closing = threading.Event()
        self._timescale: bool | None = None

    def timescale(self, conn) -> bool:
        if self._timescale is None:
            self._timescale = q.has_timescale(conn)
        return self._timescale

    def _range(self, conn, request: Request, symbol: str, tf: str) -> q.Range:
        start, end = _number(request, "from"), _number(request, "to")
        default = q.default_range(conn, symbol, tf)
        if default is None:
            raise HTTPException(404, f"no bars stored for {symbol}")
        rng = q.Range(
            q.from_ts(start) if start is not None else default.start, q.from_ts(end) if end is not None else default.end
        )
        if rng.seconds <= 0 or rng.seconds > MAX_RANGE_S:
            raise HTTPException(400, "from/to: a range of up to 7 days, from before to")
        return rng

    def _step(self, conn, request: Request, symbol: str, rng: q.Range) -> float:
        step = _number(request, "step")
        if step is None:
            return q.default_step(conn, symbol, rng)
        if step <= 0:
            raise HTTPException(400, "step: a positive price step")
        return step

    # --- JSON views ----------------------------------------------------------------------------------
    def chart(self, request: Request) -> Response:
        symbol, tf = _symbol(request), _timeframe(request)
        with self.pool.connection() as conn:
            rng = self._range(conn, request, symbol, tf)
            return ORJSONResponse(
                {
                    "symbol": symbol,
                    "timeframe": tf,
                    "from": q.ts(rng.start),
                    "to": q.ts(rng.end),
                    "step": self._step(conn, request, symbol, rng),
                    "candles": q.candles(conn, symbol, tf, rng, self.timescale(conn)),
                    "signals": q.signals(conn, symbol, rng),
                    "liquidations": q.liquidations(conn, symbol, rng),
                }
            )

    def footprint(self, request: Request) -> Response:
        symbol, tf = _symbol(request), _timeframe(request)
        with self.pool.connection() as conn:
            rng = self._range(conn, request, symbol, tf)
            bar = _number(request, "bar")
            return ORJSONResponse(
                q.footprint(
                    conn,
                    symbol,
                    tf,
                    rng,
                    self._step(conn, request, symbol, rng),
                    around=None if bar is None else q.from_ts(bar),
                )
            )

    def profile(self, request: Request) -> Response:
        symbol, tf = _symbol(request), _timeframe(request)
        with self.pool.connection() as conn:
            rng = self._range(conn, request, symbol, tf)
            return ORJSONResponse(q.volume_profile(conn, symbol, rng, self._step(conn, request, symbol, rng)))

    def heatmap(self, request: Request) -> Response:
        symbol, tf = _symbol(request), _timeframe(request)
        with self.pool.connection() as conn:
            rng = self._range(conn, request, symbol, tf)
            data = q.heatmap(conn, symbol, rng, self._step(conn, request, symbol, rng))
            data["walls"] = q.walls(conn, symbol, rng, data["column_s"])
            data["large_trades"] = q.large_trades(conn, symbol, rng)
            data["liquidations"] = q.liquidations(conn, symbol, rng)
            return ORJSONResponse(data)

    def overview(self, request: Request) -> Response:
        with self.pool.connection() as conn:
            return ORJSONResponse(ov.overview(conn, None if self.lag is None else self.lag.snapshot()))

    def lag_groups(self, request: Request) -> Response:
        if self.lag is None:
            raise HTTPException(404, "the UI was started without a broker: no consumer lag")
        return ORJSONResponse(self.lag.snapshot())

    def symbols(self, request: Request) -> Response:
        with self.pool.connection() as conn:
            return ORJSONResponse({"symbols": q.symbols(conn)})

    def gaps(self, request: Request) -> Response:
        stream = request.query_params.get("stream")
        if stream not in (None, "md.trades", "md.depth"):
            raise HTTPException(400, "stream: md.trades (trade-id holes) or md.depth (book resyncs)")
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT symbol, stream, from_id, to_id, extract(epoch FROM detected_time)::bigint, "
                "reason FROM data_gaps WHERE %(s)s::text IS NULL OR stream = %(s)s "
                "ORDER BY detected_time DESC LIMIT 500",
                {"s": stream},
            ).fetchall()
        return ORJSONResponse(
            [
                {"symbol": r[0], "stream": r[1], "from_id": r[2], "to_id": r[3], "detected": r[4], "reason": r[5]}
                for r in rows
            ]
        )

    def errors(self, request: Request) -> Response:
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT source_topic, stage, error, extract(epoch FROM event_time)::bigint "
                "FROM pipeline_errors ORDER BY event_time DESC LIMIT 200"
            ).fetchall()
        return ORJSONResponse([{"topic": r[0], "stage": r[1], "error": r[2], "time": r[3]} for r in rows])

    def desk(self, request: Request) -> Response:
        with self.pool.connection() as conn:
            ranked = desk.ranking(conn)
            if ranked is None:
                raise HTTPException(404, "the database has no xv_features table: run `tapeflow db migrate`")
            return ORJSONResponse({"ranking": ranked[:50], "pairs": desk.pairs(conn)})

    def spread(self, request: Request) -> Response:
        coin = request.query_params.get("coin", "").upper()
        sell, buy = request.query_params.get("sell", ""), request.query_params.get("buy", "")
        if not SYMBOL.match(coin) or not VENUE.match(sell) or not VENUE.match(buy):
            raise HTTPException(400, "coin, sell and buy: a coin (BTC) and two venues (binance, bybit, okx)")
        with self.pool.connection() as conn:
            return ORJSONResponse(desk.spread_history(conn, coin, sell, buy))

    def latest_bar(self, symbol: str, tf: str) -> dict | None:
        with self.pool.connection() as conn:
            end = q.data_time(conn, symbol)
            if end is None:
                return None
            seconds = q.TIMEFRAMES[tf]
            rng = q.Range(end - timedelta(seconds=seconds * 2), end)
            c = q.candles(conn, symbol, tf, rng, self.timescale(conn))
        if not c["time"]:
            return None
        return {k: v[-1] for k, v in c.items() if k not in ("cvd", "vwap")}

    def bucket_minutes(self, symbol: str, tf: str, start: int | None = None) -> list[dict]:
        with self.pool.connection() as conn:
            return q.bucket_minutes(conn, symbol, tf, None if start is None else q.from_ts(start))

    async def stream(self, request: Request) -> Response:
        """Server-sent events of the symbol's newest bar at the timeframe (``bar``) and its new signals
        (``signal``). With a live follower (``live.LiveFollower``): the stored bar once on connect, then
        every ``bars.1m`` record folded into it as ``queries.candles`` groups the stored minutes
        (``live.BarFold``), and an ``live`` event saying where updates come from (``topics`` once the
        follower reads them, ``database`` when the broker cannot be read: then the stored bar is
        polled every 2 s, as without a follower)."""
        symbol, tf = _symbol(request), _timeframe(request)
        live = self.live

        async def events() -> AsyncIterator[bytes]:
            yield b"retry: 5000\n\n"
            if live is not None:
                async for chunk in self._follow(request, live, symbol, tf):
                    yield chunk
                if self.closing.is_set() or await request.is_disconnected():
                    return
                yield _event("live", {"source": "database"})
            async for chunk in self._poll(request, symbol, tf):
                yield chunk

        return StreamingResponse(events(), media_type="text/event-stream")

    async def _follow(self, request: Request, live: LiveFollower, symbol: str, tf: str) -> AsyncIterator[bytes]:
        """The topic updates; returns when the page is gone or the follower says to poll instead."""
        seconds = q.TIMEFRAMES[tf]
        async with live.listen(symbol) as listener:  # before the stored bar: nothing falls in between
            fold = BarFold(seconds, q.ts(q.ORIGIN))
            for minute in await asyncio.to_thread(self.bucket_minutes, symbol, tf):
                fold.add(minute)
            last = fold.bar()
            if last is not None:
                yield _event("bar", last)
            quiet = 0.0
            while True:
                try:
                    kind, item = await asyncio.wait_for(listener.queue.get(), DISCONNECT_CHECK_S)
                except TimeoutError:
                    if self.closing.is_set() or await request.is_disconnected():
                        return
                    quiet += DISCONNECT_CHECK_S
                    if quiet >= KEEP_ALIVE_S:
                        quiet = 0.0
                        yield b": keep-alive\n\n"
                    continue
                quiet = 0.0
                if kind == "poll":
                    return
                if kind == "live":
                    yield _event("live", {"source": "topics"})
                elif kind == "signal":
                    yield _event("signal", item)
                elif kind == "bar":
                    if seconds > 60 and fold.is_new(item):  # a new bar: its minutes stored already (if any)
                        for minute in await asyncio.to_thread(
                            self.bucket_minutes, symbol, tf, fold.bucket(item["time"])
                        ):
                            fold.add(minute)
                    if fold.add(item) and (bar := fold.bar()) != last:
                        last = bar
                        yield _event("bar", bar)

    async def _poll(self, request: Request, symbol: str, tf: str) -> AsyncIterator[bytes]:
        """The stored newest bar whenever it changes, polled every 2 s on one pooled connection."""
        last = None
        while not self.closing.is_set() and not await request.is_disconnected():
            bar = await asyncio.to_thread(self.latest_bar, symbol, tf)
            if bar is not None and bar != last:
                last = bar
                yield _event("bar", bar)
            else:
                yield b": keep-alive\n\n"
            if not await self._nap(2.0):
                return

    async def _nap(self, seconds: float) -> bool:
        """Sleep ``seconds`` in half-second steps; False as soon as the server is closing."""
        for _ in range(round(seconds / 0.5)):
            if self.closing.is_set():
                return False
            await asyncio.sleep(0.5)
        return True

    async def overview_stream(self, request: Request) -> Response:
        return self.view_stream(request, "overview")

    async def desk_stream(self, request: Request) -> Response:
        return self.view_stream(request, "desk")

    def view_stream(self, request: Request, view: str) -> Response:
        """Server-sent events telling the overview or the desk when to re-read its JSON view: ``changed``
        (``{"topics": [...]}``) when a record came on one of its topics (``live.VIEWS``), at most every
        ``refresh_s[view]`` and ``settle_s`` after the first record (the sink has stored it by then);
        the overview also gets each new ``signal`` (every symbol's, with its symbol) for its timeline.
        ``live`` says where updates come from: ``topics``, or ``database`` (with ``every_s``) when
        the broker cannot be read or the UI has no follower: then ``changed`` comes every ``poll_s``."""
        live = self.live

        async def events() -> AsyncIterator[bytes]:
            yield b"retry: 5000\n\n"
            if live is not None:
                async for chunk in self._follow_view(request, live, view):
                    yield chunk
                if self.closing.is_set() or await request.is_disconnected():
                    return
            yield _event("live", {"source": "database", "every_s": self.poll_s})
            async for chunk in self._poll_view(request):
                yield chunk

        return StreamingResponse(events(), media_type="text/event-stream")

    async def _follow_view(self, request: Request, live: LiveFollower, view: str) -> AsyncIterator[bytes]:
        """The view's topic updates, ``changed`` throttled; returns when the page is gone or the
        follower says to poll instead."""
        loop = asyncio.get_running_loop()
        async with live.listen(None, VIEWS[view]) as listener:
            throttle = Throttle(self.refresh_s[view], self.settle_s)
            said = loop.time()  # when anything was last sent (keep-alive)
            while True:
                now = loop.time()
                if (topics := throttle.take(now)) is not None:
                    yield _event("changed", {"topics": topics})
                    said = now
                if now - said >= KEEP_ALIVE_S:
                    yield b": keep-alive\n\n"
                    said = now
                due = throttle.due
                wait = DISCONNECT_CHECK_S if due is None else min(DISCONNECT_CHECK_S, max(0.0, due - now))
                try:
                    kind, item = await asyncio.wait_for(listener.queue.get(), wait)
                except TimeoutError:
                    if self.closing.is_set() or await request.is_disconnected():
                        return
                    continue
                if kind == "poll":
                    return
                if kind == "live":
                    yield _event("live", {"source": "topics"})
                    said = loop.time()
                elif kind == "signal":
                    yield _event("signal", item)
                    said = loop.time()
                elif kind == "changed":
                    listener.seen(item)
                    throttle.note(item, loop.time())

    async def _poll_view(self, request: Request) -> AsyncIterator[bytes]:
        """``changed`` every ``poll_s`` (the page re-reads the database), looking at closing every half
        second and at the page every second."""
        loop = asyncio.get_running_loop()
        next_at = loop.time() + self.poll_s
        while not self.closing.is_set() and not await request.is_disconnected():
            if loop.time() >= next_at:
                next_at = loop.time() + self.poll_s
                yield _event("changed", {"topics": [], "poll": True})
            if not await self._nap(1.0):
                return

    # --- the server's own endpoints -----------------------------------------------------------------
    def health(self, request: Request) -> Response:
        try:
            with self.pool.connection(timeout=5) as conn:
                conn.execute("SELECT 1")
        except Exception as exc:  # noqa: BLE001 - any failure is "not healthy", said in one line
            return ORJSONResponse({"status": "unhealthy", "detail": f"database: {type(exc).__name__}"}, status_code=503)
        return ORJSONResponse({"status": "ok", "detail": "serving"})

    @asynccontextmanager
    async def lifespan(self, app: Starlette):
        """The pool, the lag watch and the live follower live as long as the server."""
        await asyncio.to_thread(self.pool.open)
        if self.lag is not None:
            self.lag.start()
        try:
            yield
        finally:
            if self.lag is not None:
                await asyncio.to_thread(self.lag.stop)
            if self.live is not None:
                await asyncio.to_thread(self.live.close)
            await asyncio.to_thread(self.pool.close)


def _event(name: str, data) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def create_app(
    conninfo: str,
    token: str,
    *,
    host: str = "127.0.0.1",
    pool_size: int = 4,
    actions: Actions | None = None,
    consumer_lag: Callable[[], list[dict]] | None = None,
    lag_limits: tuple[int, int] = (ov.LAG_WARN, ov.LAG_BAD),
    lag_refresh_s: float = ov.LAG_REFRESH_S,
    live: LiveFollower | None = None,
    refresh_s: dict[str, float] | None = None,
    settle_s: float = SETTLE_S,
    poll_s: float = POLL_S,
) -> Starlette:
    """The application reading ``conninfo`` (the read-only role; every transaction read-only too);
    with ``actions`` the desk's manual actions too (``tapeflow_ui.actions``); with ``consumer_lag``
    (the groups' lag, as ``tapeflow topics lag --json``) the overview's consumer-lag light, refreshed in
    the background every ``lag_refresh_s`` (``overview.LagWatch``; ``lag_limits``: warn and bad above);
    with ``live`` (a ``live.LiveFollower``) the streams follow the topics instead of polling the database
    (``refresh_s``, ``settle_s``, ``poll_s``: how often the overview and the desk re-read, ``UI.view_stream``)."""
    lag = None if consumer_lag is None else ov.LagWatch(consumer_lag, lag_refresh_s, *lag_limits)
    ui = UI(_read_only_pool(conninfo, pool_size), lag, live, refresh_s, settle_s, poll_s)
    routes = [
        *_page_routes(token, actions),
        Route("/api/desk", ui.desk),
        Route("/api/desk/spread", ui.spread),
        Route("/health", ui.health),
        Route("/api/overview", ui.overview),
        Route("/api/symbols", ui.symbols),
        Route("/api/chart", ui.chart),
        Route("/api/footprint", ui.footprint),
        Route("/api/profile", ui.profile),
        Route("/api/heatmap", ui.heatmap),
        Route("/api/stream", ui.stream),
        Route("/api/overview/stream", ui.overview_stream),
        Route("/api/desk/stream", ui.desk_stream),
        Route("/api/quality/gaps", ui.gaps),
        Route("/api/quality/errors", ui.errors),
        Route("/api/quality/lag", ui.lag_groups),
        *trade_api_routes(ui.pool, ORJSONResponse),
        *degradation_routes(ui.pool, ORJSONResponse),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    if actions is not None:
        routes += action_routes(actions, ui.pool)
    allowed = LOOPBACK_HOSTS if host in ("127.0.0.1", "localhost", "::1") else ["*"]
    middleware = [Middleware(TrustedHostMiddleware, allowed_hosts=allowed), Middleware(TokenGuard, token=token)]
    app = Starlette(routes=routes, middleware=middleware, lifespan=ui.lifespan)
    app.state.closing = ui.closing  # set it to end the open streams (a server shutting down)
    return app


def _read_only_pool(conninfo: str, pool_size: int) -> ConnectionPool:
    """The views' pool: every transaction read-only, bounded in time, planned without JIT."""
    # jit off: the views are index lookups and bounded scans answering in milliseconds; a misestimated
    # row count (a LATERAL over generate_series, a partition's stale statistics) made PostgreSQL spend
    # ~0.6 s compiling a 60 ms query
    return ConnectionPool(
        conninfo,
        min_size=1,
        max_size=pool_size,
        open=False,
        name="tapeflow-ui",
        kwargs={"options": "-c default_transaction_read_only=on -c statement_timeout=30000 -c jit=off"},
    )


def _page_routes(token: str, actions: Actions | None) -> list[Route]:
    """The pages: templates given the CSRF value of ``token`` and which desk actions are on."""
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    csrf = csrf_value(token)

    def page(name: str, title: str) -> Callable:
        def endpoint(request: Request) -> Response:
            context = {
                "title": title,
                "csrf": csrf,
                "page": name,
                "actions": actions is not None,
                "strategies": list(actions.strategies) if actions is not None and actions.publish_command else [],
            }
            if "symbol" in request.path_params:
                context["symbol"] = _symbol(request)
            if "position_id" in request.path_params:
                context["position_id"] = checked_position(request.path_params["position_id"])
            return templates.TemplateResponse(request, f"{name}.html", context)

        return endpoint

    return [
        Route("/", page("overview", "Market overview")),
        Route("/symbol/{symbol}", page("orderflow", "Order flow")),
        Route("/watchlist", page("watchlist", "Watchlist desk")),
        Route("/trades", page("trades", "Closed trades")),
        Route("/trade/{position_id:str}", page("trade", "Trade")),
    ]
