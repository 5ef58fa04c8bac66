"""`tapeflow produce`: run an exchange producer (Binance, Bybit or OKX) as a process (signals, metrics/health
port, flush on exit).

Exit codes: 0 after a clean stop or the end of a replay, 1 when records could not be delivered.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from producers.base.venue import VenueProducer
from producers.binance.producer import (
    LIVE_REST,
    LIVE_WS,
    BinanceProducer,
    ProducerConfig,
)
from producers.binance.warm_start import WarmStartConfig, trades_in_topics
from producers.metrics import ProducerMetrics
from schemas.registry import registry_from_url
from schemas.serde import AvroSerde
from tapeflow_runtime.endpoints import resolve_broker
from tapeflow_runtime.native_memory import live_service_allocator
from tapeflow_runtime.paths import StackPaths
from tapeflow_runtime.publisher import Publisher
from tapeflow_runtime.service_http import build_app, serve
from tapeflow_runtime.settings import Settings

log = structlog.get_logger("producer")


@dataclass
class ProduceOptions:
    ws_base_url: str = LIVE_WS
    rest_base_url: str = LIVE_REST
    spot_base_url: str = "https://api.binance.com"
    coinbase_base_url: str = "https://api.exchange.coinbase.com"
    replay_control_url: str | None = None
    metrics_port: int = 0
    metrics_host: str = "127.0.0.1"
    exchange: str = "binance"
    bybit_ws_url: str | None = None
    okx_ws_url: str | None = None
    okx_rest_url: str | None = None
    warm_start_hours: float = 0.0  # Binance: prime md.* with this many hours of history first (0: off)
    warm_start_detail_minutes: float = 62.0  # of which trade by trade (WarmStartConfig.detail_minutes)
    vision_url: str = "https://data.binance.vision"


def market_data_producer_config(settings: Settings) -> dict:
    """librdkafka's linger for the market-data producers (``TAPEFLOW_MARKET_DATA_LINGER_MS``, default
    25 ms; 5 ms elsewhere): a little batching per partition for a record's latency well under the
    engine's 1-second buckets, the same for the embedded and an external broker."""
    linger = settings.market_data_linger_ms
    return {"linger.ms": linger}


class BrokerWatch:
    """Whether the broker takes this producer's records, for its /health and log.

    librdkafka reports a broker it cannot reach (refused connections while Kafka restarts, or while it
    is held down on a full log disk) through the client's ``error_cb``, served from the publisher's
    polls (every second at least); the records wait in the client's queue and are resent, so nothing
    is lost, but the producer says so: "broker unavailable: <librdkafka's error>" in /health (status
    ``broker-unavailable``, not ok) and a warning when it starts, an info line when records are
    acknowledged again. Over once a record is acknowledged after the last error, or when no error has
    come for `QUIET_S` (an idle producer has nothing to acknowledge)."""

    QUIET_S = 15.0

    def __init__(self) -> None:
        self.delivered: Callable[[], int] = lambda: 0
        self.error: str | None = None
        self.since = 0.0
        self._last_error = 0.0
        self._delivered_at_error = 0

    def on_error(self, err) -> None:
        now = time.monotonic()
        if self.error is None:
            self.since = now
            log.warning("broker unavailable: records wait in the producer and are resent", error=err.str())
        self.error, self._last_error, self._delivered_at_error = err.str(), now, self.delivered()

    def problem(self) -> str | None:
        if self.error is None:
            return None
        now = time.monotonic()
        if self.delivered() > self._delivered_at_error or now - self._last_error > self.QUIET_S:
            log.info("broker available again", unavailable_s=round(now - self.since, 1))
            self.error = None
            return None
        return f"broker unavailable for {now - self.since:.0f}s: {self.error[:200]}"

    def health(self, inner: Callable[[], dict]) -> Callable[[], dict]:
        def health() -> dict:
            body = inner()
            problem = self.problem()
            if problem is not None and body.get("status") in ("connected", "priming"):
                body = {**body, "status": "broker-unavailable", "detail": f"{problem}; {body.get('detail', '')}"}
            return body

        return health


async def run_producer(settings: Settings, options: ProduceOptions) -> int:
    live_service_allocator()  # days of streaming after the warm start's large frees (native_memory)
    paths = StackPaths(settings.home)
    bootstrap = resolve_broker(settings, paths)
    metrics = ProducerMetrics()
    metrics.expect_symbols(list(settings.symbols))
    broker_watch = BrokerWatch()
    publisher = Publisher(
        bootstrap,
        AvroSerde(registry_from_url(settings.schema_registry_url)),
        metrics,
        topic_prefix=settings.topic_prefix,
        error_cb=broker_watch.on_error,
        **market_data_producer_config(settings),
    )
    broker_watch.delivered = lambda: publisher.delivered
    if options.exchange == "bybit":
        producer = _bybit_producer(settings, options, publisher, metrics)
    elif options.exchange == "okx":
        producer = _okx_producer(settings, options, publisher, metrics)
    else:
        producer = _binance_producer(settings, options, paths, bootstrap, publisher, metrics)
    ended = await _serve_until_stopped(producer, broker_watch, metrics, settings, options)
    log.info("producer stopped", reason=ended, delivered=publisher.delivered, undelivered=producer.undelivered)
    # the last line of the log is what `tapeflow status` shows for a finished replay
    frames_in = producer.stream.messages_in if producer.stream is not None else 0
    print(producer.summary(ended, frames_in, producer.undelivered), flush=True)
    # an incomplete replay (frames lost in transport) is a failure, whatever was delivered
    return 0 if publisher.healthy and not producer.replay_incomplete else 1


async def _serve_until_stopped(
    producer: VenueProducer,
    broker_watch: BrokerWatch,
    metrics: ProducerMetrics,
    settings: Settings,
    options: ProduceOptions,
) -> str:
    """Run `producer` with its metrics/health port open until SIGINT/SIGTERM or its own end; the reason it ended."""
    runner, port = await serve(
        build_app(
            metrics.registry,
            broker_watch.health(producer.health),
            frozenset({"connected", "replay-finished", "priming"}),
        ),
        options.metrics_host,
        options.metrics_port,
    )
    log.info("producer started", exchange=options.exchange, symbols=list(settings.symbols), metrics_port=port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        return await producer.run(stop)
    finally:
        await runner.cleanup()


def _bybit_producer(
    settings: Settings, options: ProduceOptions, publisher: Publisher, metrics: ProducerMetrics
) -> VenueProducer:
    from producers.bybit.producer import LIVE_WS as BYBIT_WS
    from producers.bybit.producer import BybitProducer, BybitProducerConfig

    return BybitProducer(
        BybitProducerConfig(
            symbols=list(settings.symbols),
            ws_url=options.bybit_ws_url or BYBIT_WS,
            replay_control_url=options.replay_control_url,
        ),
        publisher,
        metrics,
    )


def _okx_producer(
    settings: Settings, options: ProduceOptions, publisher: Publisher, metrics: ProducerMetrics
) -> VenueProducer:
    from producers.okx.producer import LIVE_WS as OKX_WS
    from producers.okx.producer import OkxProducer, OkxProducerConfig
    from producers.okx.rest import LIVE_REST as OKX_REST

    return OkxProducer(
        OkxProducerConfig(
            symbols=list(settings.symbols),
            ws_url=options.okx_ws_url or OKX_WS,
            rest_url=options.okx_rest_url or OKX_REST,
            replay_control_url=options.replay_control_url,
        ),
        publisher,
        metrics,
    )


def _binance_producer(
    settings: Settings,
    options: ProduceOptions,
    paths: StackPaths,
    bootstrap: str,
    publisher: Publisher,
    metrics: ProducerMetrics,
) -> VenueProducer:
    """The Binance producer, primed with `warm_start_hours` of history first when asked."""
    warm = None
    history_in_topics = None
    if options.warm_start_hours > 0:
        warm = WarmStartConfig(
            hours=options.warm_start_hours,
            vision_url=options.vision_url,
            detail_minutes=options.warm_start_detail_minutes,
            cache_dir=paths.home / "vision",
            database_url=_readonly_database(settings, paths),
        )
        history_in_topics = trades_in_topics(bootstrap, publisher.prefix, publisher.serde)
    config = ProducerConfig(
        symbols=list(settings.symbols),
        ws_base_url=options.ws_base_url,
        rest_base_url=options.rest_base_url,
        replay_control_url=options.replay_control_url,
        spot_base_url=options.spot_base_url,
        coinbase_base_url=options.coinbase_base_url,
        warm_start=warm,
        history_in_topics=history_in_topics,
        checkpoint_path=paths.home / "producer" / f"binance-{settings.topic_prefix or 'default'}.json",
    )
    return BinanceProducer(config, publisher, metrics)


def _readonly_database(settings: Settings, paths: StackPaths) -> str | None:
    """Where a warm start may find stored history: the stack's database (read-only role), if there is one."""
    from tapeflow_runtime.endpoints import EndpointError, resolve_database

    try:
        endpoints = resolve_database(settings, paths)
    except EndpointError:  # no database configured or running: the exchange is the source
        return None
    return endpoints.readonly or endpoints.owner
