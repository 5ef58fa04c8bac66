"""`tapeflow notify`: the notifier as a process (its own consumer group, /metrics and /health).

Reads `signals`, `fills`, `positions` and `risk.events` (TAPEFLOW_NOTIFY_EVENTS; `features` too
when the market alerts are wanted: tapeflow_notify/market_alerts.py) in group
`<prefix>tapeflow-notify`, starting at the end on its first run: it tells about what happens from now
on, not about history. A partition without a committed offset is positioned at its end during the
assignment (not lazily afterwards, which would skip what arrives in between), and its records older
than the process start are skipped (Tansu's end offset counts batches and can lie inside old data).
Offsets are auto-committed (at most once: a message lost in a crash is better than the same fill
announced twice). Polls run in a worker thread and hand notes to the dispatcher on
the event loop, which owns the HTTP senders; nothing here waits for a chat service.

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
from tapeflow_runtime.epochs import ChainFollower, ReadPositions, reader_chain, rollover_enabled
from tapeflow_runtime.kafka_client import consumer_config
from tapeflow_runtime.paths import StackPaths
from tapeflow_runtime.service_http import build_app, serve
from tapeflow_runtime.settings import ConfigError, Settings

log = structlog.get_logger("notify")

POLL_S = 0.5


class NotifyService:
    def __init__(self, settings: Settings, bootstrap: str, dispatcher: Dispatcher, metrics: NotifyMetrics,
                 rules: AlertRules | None = None) -> None:
        """``rules``: the market alerts' thresholds, parsed by the caller (default: from the settings)."""
        self.settings = settings
        self.dispatcher = dispatcher
        self.metrics = metrics
        self.serde = AvroSerde(registry_from_url(settings.schema_registry_url))
        # on the embedded stack the topics are chains of segments (tapeflow_runtime.epochs): follow them
        # in-process, a rollover's next segment from its first own record
        self.follower = ChainFollower(list(settings.notify_events), lambda: reader_chain(settings)) \
            if rollover_enabled(settings) else None
        self.added: set[str] = set()  # topics of segments that began after this process started
        self.positions = ReadPositions()  # what the follower asks: how far each partition is read
        self.names = self._names()
        # `features` among the events turns the market alerts on (tapeflow_notify/market_alerts.py)
        self.alerts = MarketAlerts(rules if rules is not None else AlertRules.from_mapping(settings.notify_alert_thresholds))
        self.group = f"{settings.topic_prefix}tapeflow-notify"
        self.consumer = Consumer(consumer_config(bootstrap, self.group, **{
            "enable.auto.commit": True, "auto.offset.reset": "latest", "enable.partition.eof": True}))
        self.assigned = False
        self.started_ms = int(time.time() * 1000)
        self.fresh: set[tuple[str, int]] = set()  # partitions started at their end: skip older records
        self.consumer.subscribe(list(self.names), on_assign=self._on_assign, on_revoke=self._on_revoke)

    def _names(self) -> dict[str, str]:
        if self.follower is None:
            return {self.settings.topic(t): t for t in self.settings.notify_events}
        return {topic: self.follower.catalogue_name(topic) for topic in self.follower.reading}

    def follow_segments(self) -> None:
        """A rollover opened a segment (or one was read to its end): read what the chain says now."""
        if self.follower is None or not self.follower.due():
            return

        changed = self.follower.update(self.positions)
        if changed is None:
            return
        reading, added = changed
        self.added.update(added)
        self.names = self._names()
        log.info("following the topic segments", reading=reading, added=added)
        self.consumer.subscribe(reading, on_assign=self._on_assign, on_revoke=self._on_revoke)

    def _on_assign(self, consumer, partitions) -> None:
        try:
            committed = consumer.committed(partitions, timeout=10)
            for tp in committed:
                if tp.offset < 0 and tp.topic in self.added:  # a new segment: from its first own record
                    link = self.follower.link_of(tp.topic) if self.follower else None
                    tp.offset = link.start(self.names.get(tp.topic, ""), tp.partition) if link else 0
                elif tp.offset < 0:
                    tp.offset = consumer.get_watermark_offsets(tp, timeout=10)[1]
                    self.fresh.add((tp.topic, tp.partition))
        except KafkaException as exc:  # fall back to the lazy reset (auto.offset.reset=latest)
            log.warning("start offsets not resolved", error=str(exc))
            committed = partitions
        for tp in committed:
            if tp.offset >= 0:
                self.positions.starts_at(tp.topic, tp.partition, tp.offset)
        consumer.assign(committed)
        self.assigned = True
        log.info("partitions assigned", count=len(partitions), at_end=len(self.fresh))

    def _on_revoke(self, consumer, partitions) -> None:
        self.assigned = False

    def handle(self, messages) -> None:
        for msg in messages:
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    self.positions.at_end(msg.topic(), msg.partition())
                else:
                    log.warning("consume error", error=msg.error().str())
                continue
            name = self.names.get(msg.topic())
            if name is None:
                continue
            self.positions.consumed(msg.topic(), msg.partition(), msg.offset())
            if (msg.topic(), msg.partition()) in self.fresh and msg.timestamp()[1] < self.started_ms:
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
            await loop.run_in_executor(None, self.follow_segments)


async def run_notifier(settings: Settings, metrics_port: int, metrics_host: str) -> int:
    try:
        channels = channels_from(settings)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if not channels:
        raise ConfigError("no notification channel configured: set TAPEFLOW_TELEGRAM_BOT_TOKEN and "
                          "TAPEFLOW_TELEGRAM_CHAT_ID, TAPEFLOW_DISCORD_WEBHOOK_URL or TAPEFLOW_NOTIFY_WEBHOOK_URL "
                          "(or their *_FILE variants)")
    try:
        rules = AlertRules.from_mapping(settings.notify_alert_thresholds)
    except ValueError as exc:
        raise ConfigError(f"TAPEFLOW_NOTIFY_ALERT_THRESHOLDS: {exc}") from None
    metrics = NotifyMetrics()
    dispatcher = Dispatcher(channels, settings.notify_rate_per_minute, metrics)
    bootstrap = resolve_broker(settings, StackPaths(settings.home))
    service = NotifyService(settings, bootstrap, dispatcher, metrics, rules)
    runner, port = await serve(build_app(metrics.registry, service.health, frozenset({"running"})),
                               metrics_host, metrics_port)
    log.info("notifier started", channels=[c.name for c in channels], events=settings.notify_events,
             rate_per_minute=settings.notify_rate_per_minute, metrics_port=port)
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
    log.info("notifier stopped", seconds=round(time.monotonic() - started, 1),
             delivered={s.channel.name: s.delivered for s in dispatcher.senders})
    return 0
