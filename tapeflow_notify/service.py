"""`tapeflow notify`: the notifier as a process (its own consumer group, /metrics and /health).

Reads `signals`, `fills`, `positions` and `risk.events` (TAPEFLOW_NOTIFY_EVENTS; `features` too
when the market alerts are wanted: tapeflow_notify/market_alerts.py) in group
`<prefix>tapeflow-notify`, starting at the end on its first run: it tells about what happens from now
on, not about history. A partition without a committed offset is positioned at its end during the
assignment (not lazily afterwards, which would skip what arrives in between). Topics are the
catalogue names under the stack's topic prefix. Offsets are auto-committed (at most once: a message
lost in a crash is better than the same fill announced twice). Polls run in a worker thread and hand
notes to the dispatcher on the event loop, which owns the HTTP senders; nothing here waits for a chat
service.

/health: `running` once the consumer has its partitions; `failing` (503) when every channel failed its
last 3 deliveries; `starting` until the first assignment.
"""

from __future__ import annotations

import asyncio
import signal
import time

import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException

from schemas.registry import registry_from_url
from schemas.serde import AvroSerde
from tapeflow_notify.channels import channels_from
from tapeflow_notify.dispatch import Dispatcher
from tapeflow_notify.market_alerts import AlertRules, MarketAlerts
from tapeflow_notify.messages import note_for
from tapeflow_notify.metrics import NotifyMetrics
from tapeflow_runtime.endpoints import resolve_broker
from tapeflow_runtime.kafka_client import consumer_config
from tapeflow_runtime.paths import StackPaths
from tapeflow_runtime.service_http import build_app, serve
from tapeflow_runtime.settings import ConfigError, Settings

log = structlog.get_logger("notify")

POLL_S = 0.5


class NotifyService:
    def __init__(
        self,
        settings: Settings,
        bootstrap: str,
        dispatcher: Dispatcher,
        metrics: NotifyMetrics,
        rules: AlertRules | None = None,
    ) -> None:
        """``rules``: the market alerts' thresholds, parsed by the caller (default: from the settings)."""
        self.settings = settings
        self.dispatcher = dispatcher
        self.metrics = metrics
        self.serde = AvroSerde(registry_from_url(settings.schema_registry_url))
        self.names = {settings.topic(t): t for t in settings.notify_events}  # topic -> catalogue name
        # `features` among the events turns the market alerts on (tapeflow_notify/market_alerts.py)
        self.alerts = MarketAlerts(
            rules if rules is not None else AlertRules.from_mapping(settings.notify_alert_thresholds)
        )
        self.group = f"{settings.topic_prefix}tapeflow-notify"
        self.consumer = Consumer(
            consumer_config(bootstrap, self.group, **{"enable.auto.commit": True, "auto.offset.reset": "latest"})
        )
        self.assigned = False
        self.consumer.subscribe(list(self.names), on_assign=self._on_assign, on_revoke=self._on_revoke)

    def _on_assign(self, consumer, partitions) -> None:
        at_end = 0
        try:
            committed = consumer.committed(partitions, timeout=10)
            for tp in committed:
                if tp.offset < 0:  # never committed: from the end as it is now
                    tp.offset = consumer.get_watermark_offsets(tp, timeout=10)[1]
                    at_end += 1
        except KafkaException as exc:  # fall back to the lazy reset (auto.offset.reset=latest)
            log.warning("start offsets not resolved", error=str(exc))
            committed = partitions
        consumer.assign(committed)
        self.assigned = True
        log.info("partitions assigned", count=len(partitions), at_end=at_end)

    def _on_revoke(self, consumer, partitions) -> None:
        self.assigned = False

    def handle(self, messages) -> None:
        for msg in messages:
            if msg.error():
                if msg.error().code() != KafkaError._PARTITION_EOF:
                    log.warning("consume error", error=msg.error().str())
                continue
            name = self.names.get(msg.topic())
            if name is None:
                continue
            self.metrics.events.labels(name).inc()
            try:
                record = self.serde.decode(msg.value())
            except Exception as exc:  # not ours to dead-letter: the sink already records it
                log.warning("undecodable record skipped", topic=name, offset=msg.offset(), error=str(exc))
                continue
            notes = self.alerts.notes_for(record) if name == "features" else [note_for(name, record)]
            for note in notes:
                if note is not None:
                    self.dispatcher.submit(note)

    def health(self) -> dict:
        channels = self.dispatcher.health()
        status = "failing" if channels["all_failing"] else ("running" if self.assigned else "starting")
        return {"status": status, "group": self.group, **channels}

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            messages = await loop.run_in_executor(None, self.consumer.consume, 200, POLL_S)
            self.handle(messages)  # on the loop: the dispatcher's queues are not thread-safe


async def run_notifier(settings: Settings, metrics_port: int, metrics_host: str) -> int:
    try:
        channels = channels_from(settings)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if not channels:
        raise ConfigError(
            "no notification channel configured: set TAPEFLOW_TELEGRAM_BOT_TOKEN and "
            "TAPEFLOW_TELEGRAM_CHAT_ID, TAPEFLOW_DISCORD_WEBHOOK_URL or TAPEFLOW_NOTIFY_WEBHOOK_URL "
            "(or their *_FILE variants)"
        )
    try:
        rules = AlertRules.from_mapping(settings.notify_alert_thresholds)
    except ValueError as exc:
        raise ConfigError(f"TAPEFLOW_NOTIFY_ALERT_THRESHOLDS: {exc}") from None
    metrics = NotifyMetrics()
    dispatcher = Dispatcher(channels, settings.notify_rate_per_minute, metrics)
    bootstrap = resolve_broker(settings, StackPaths(settings.home))
    service = NotifyService(settings, bootstrap, dispatcher, metrics, rules)
    runner, port = await serve(
        build_app(metrics.registry, service.health, frozenset({"running"})), metrics_host, metrics_port
    )
    log.info(
        "notifier started",
        channels=[c.name for c in channels],
        events=settings.notify_events,
        rate_per_minute=settings.notify_rate_per_minute,
        metrics_port=port,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    senders = asyncio.create_task(dispatcher.run())
    started = time.monotonic()
    try:
        await service.run(stop)
        await dispatcher.drain(5.0)
    finally:
        senders.cancel()
        await asyncio.gather(senders, return_exceptions=True)
        await asyncio.to_thread(service.consumer.close)
        await runner.cleanup()
    log.info(
        "notifier stopped",
        seconds=round(time.monotonic() - started, 1),
        delivered={s.channel.name: s.delivered for s in dispatcher.senders},
    )
    return 0
