"""`tapeflow cross-venue`: the watchlist service as a process. md.book, md.mark and md.indicators in
(the directional engine's inputs, from every venue), ``xv.features`` out, stored by the sink in
``xv_features``.

Keyed by coin, one process: a coin's legs are different Kafka keys (``binance:BTCUSDT``,
``okx:BTC-USDT-SWAP``) in different partitions, so one consumer (group ``<prefix>tapeflow-watchlist``)
reads every partition of the three topics, merges them by event time (``merge``) and feeds one
``CrossVenueState``, whose per-coin state gives the same features as one state per coin (tested in
tests/stream_apps/cross_venue). A second process in the same group would get part of the
partitions, see only some legs of a coin, and reports itself degraded (``not sole reader``).
Scaling out by coin needs a repartition topic keyed by coin; at 20 coins x 3 venues one process
has ~25x headroom (benchmarks/RESULTS.md, bench_cross_venue).

Output: every ``publish_interval_ms`` of event time (the state evaluates every second; the rolling
statistics sample its grid) each coin with a fresh leg gets one record per ordered venue pair
(``records``), keyed by coin, id ``coin:eval_time:sell:buy``.

Checkpoints: every ``checkpoint_interval_s`` (and on revocation and stop) the outputs are flushed,
then the state (``CrossVenueState.to_dict``) and the merge's positions (per partition, the first
offset whose input the state has not seen) are written to TAPEFLOW_HOME/watchlist/<group>.json,
then the same positions are committed to the group. A restart restores the state and seeks to those
positions, so it recomputes exactly the evaluations after the checkpoint: re-published records
carry the same ids and values, and the sink keeps one row each (ON CONFLICT DO NOTHING). Without a
checkpoint a new group starts ``prime_history_ms`` back in the inputs (``faust_app.priming``); a
group with committed offsets but no checkpoint file starts there with an empty state (its 1 h/12 h
windows fill again). A checkpoint written with other parameters is not restored; its positions are
used only where the group has committed offsets (topics deleted and created again under the same
names, with the group's offsets gone, start at 0 again: those positions would point into other data).

Trading (``--strategy``, ``traders``): each watchlist strategy's trader (``execution.watchlist_trader``)
is fed the same merged inputs as the feature state, in the same order, and what it does is published
keyed by coin: signals and rejections to ``xv.signals``, leg orders to ``xv.orders``, funding payments
to ``xv.funding``, a snapshot of a hedged pair after each change to ``xv.pairs`` (the sink stores
them in xv_signals, xv_leg_orders, xv_funding_payments, xv_pair_events). Its whole state (features,
cooldowns, pairs, books, funding) is in the checkpoint beside the feature state, under its own
fingerprint (a strategy added or changed starts empty; the others keep theirs), so a restart
re-publishes exactly what followed the checkpoint, with the same ids, and the watchlist backtest
over the same topics computes the same records (tested).

Operator commands (``xv.commands``, only with ``traders``): the desk's requests to open or close a
hedged pair by hand (``execution.watchlist_commands``) are read beside the inputs but outside the
event-time merge (a command is an operator's act, not market data; it carries the time of the spread
the operator saw, and the trader holds it until its inputs reach that time). Each is handed to every
trader (the one of its strategy acts, ``WatchlistTrader.command``) after the inputs released so far,
what it did is published (its answer on xv.commands, its signal, orders and pair on the usual topics),
and the service checkpoints at once, so the command's position is committed with the state that
applied it and a restart never applies it again. A new group starts reading commands at their end
(``start_from``): a command older than the service's state is not replayed into it.

Health (``/health``): running, rebalancing, or degraded (not the sole reader; outputs
undeliverable). Metrics (``/metrics``): inputs by topic, records out, evaluations, events dropped
by kind (late, stale, ...), inputs held for event-time order, the last evaluation's event time,
consumer lag.

Exit codes: 0 clean stop; 1 failure while running; 2 no Kafka.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from prometheus_client import CollectorRegistry, Counter, Gauge

from schemas.catalogue import ENGINE_INPUT_TIME
from schemas.catalogue import topic as topic_spec
from schemas.registry import registry_from_url
from schemas.serde import AvroSerde
from stream_apps.cross_venue.events import event_from_record
from stream_apps.cross_venue.state import CoinFeatures, CrossVenueParams, CrossVenueState
from stream_apps.watchlist.merge import MAX_AHEAD_MS, AheadOfBooks, PartitionMerge
from stream_apps.watchlist.records import TOPIC, feature_records
from tapeflow_runtime.files import atomic_write_bytes
from tapeflow_runtime.kafka_client import LagProbe, consumer_config, ensure_topics, topic_metadata
from tapeflow_runtime.offsets import CommittedOffsetError, committed_offsets
from tapeflow_runtime.publisher import Publisher, PublishMetrics
from tapeflow_runtime.service_http import build_app, run_thread_with_endpoint
from tapeflow_runtime.settings import Settings

log = structlog.get_logger("watchlist")

INPUTS = ("md.book", "md.mark", "md.indicators")
COMMANDS = "xv.commands"  # operator commands for the traders (execution.watchlist_commands): read outside the merge
CHECKPOINT_VERSION = 1


@dataclass
class WatchlistOptions:
    params: CrossVenueParams = field(default_factory=CrossVenueParams)
    publish_interval_ms: int = 15_000  # event time between two records of a coin (a multiple of the grid)
    lateness_ms: int = 1_000  # hold inputs this long in event time for venues whose books arrive later
    max_hold_s: float = 5.0  # inputs held back by a partition that delivers nothing are released after this
    max_ahead_ms: int = MAX_AHEAD_MS  # an input this far ahead of the newest book is dropped (merge.AheadOfBooks)
    checkpoint_interval_s: float = 30.0
    prime_history_ms: int | None = 15 * 60_000  # a new group without checkpoint starts this far back
    start_from: str = "latest"  # where a new group without priming starts ("earliest" for tests)
    group_id: str | None = None  # default: <topic_prefix>tapeflow-watchlist
    metrics_port: int = 0
    metrics_host: str = "127.0.0.1"
    stop: threading.Event | None = None  # set it to stop the service (tests, embedding)
    #: watchlist strategies trading hedged pairs on the same merged inputs (``execution.watchlist_trader.
    #: WatchlistTrader``, built by the CLI: this layer does not import execution): each is fed exactly
    #: the events the feature state is fed, and what it does is published to its topics
    traders: tuple[Any, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        if self.publish_interval_ms <= 0 or self.publish_interval_ms % self.params.eval_interval_ms:
            raise ValueError(
                "publish_interval_ms must be a positive multiple of the evaluation interval "
                f"({self.params.eval_interval_ms} ms)"
            )

    def fingerprint(self) -> str:
        """What a checkpoint's state depends on: restored only under the same parameters."""
        return hashlib.sha256(repr((self.params, self.publish_interval_ms)).encode()).hexdigest()[:16]

    def output_topics(self) -> tuple[str, ...]:
        topics = {TOPIC}
        for trader in self.traders:
            topics.update(trader.topics.values())
        return tuple(sorted(topics))


class WatchlistMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.inputs = Counter("tapeflow_watchlist_inputs_total", "Input records read", ["topic"], registry=r)
        self.decode_errors = Counter(
            "tapeflow_watchlist_decode_errors_total",
            "Input records not decodable (skipped; the engine dead-letters them)",
            ["topic"],
            registry=r,
        )
        self.evaluations = Counter("tapeflow_watchlist_evaluations_total", "Coin evaluations published", registry=r)
        self.records_out = Counter("tapeflow_watchlist_records_out_total", "xv.features records published", registry=r)
        self.dropped = Gauge(
            "tapeflow_watchlist_dropped_inputs",
            "Inputs the cross-venue state ignored, by why "
            "(late, stale, unknown_venue, bad_symbol, other_market, ahead_of_books)",
            ["reason"],
            registry=r,
        )
        self.held = Gauge("tapeflow_watchlist_held_inputs", "Inputs held for event-time order", registry=r)
        self.last_eval = Gauge(
            "tapeflow_watchlist_last_eval_time_seconds", "Event time of the last evaluation", registry=r
        )
        self.trading = Counter(
            "tapeflow_watchlist_trading_records_total",
            "Records of the watchlist strategies "
            "(signal, order, funding, pair; blocked: exits a stale book blocked, not published)",
            ["strategy", "kind"],
            registry=r,
        )
        self.checkpoints = Counter("tapeflow_watchlist_checkpoints_total", "Checkpoints written", registry=r)
        self.lag = Gauge(
            "tapeflow_watchlist_consumer_lag_messages",
            "High watermark minus committed offset",
            ["group", "topic", "partition"],
            registry=r,
        )


class WatchlistService:
    def __init__(self, settings: Settings, bootstrap: str, serde: AvroSerde, options: WatchlistOptions) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.serde = serde
        self.options = options
        self.prefix = settings.topic_prefix
        self.group = options.group_id or f"{self.prefix}tapeflow-watchlist"
        self.metrics = WatchlistMetrics()
        self.publisher = Publisher(
            bootstrap,
            serde,
            PublishMetrics(self.metrics.registry, prefix="tapeflow_watchlist_publish"),
            topic_prefix=self.prefix,
        )
        self.checkpoint_path = Path(settings.home) / "watchlist" / f"{self.group}.json"
        # inputs far ahead of the newest book fed to the state are dropped (merge.AheadOfBooks)
        self.ahead_filter = AheadOfBooks(options.max_ahead_ms)
        self.state, self.positions = self._restore()
        self.merge = PartitionMerge(options.lateness_ms, options.max_ahead_ms, self.ahead_filter.newest_book)
        self.status = "starting"
        self.sole_reader = False
        self.published = 0
        self._names = {self.prefix + name: name for name in self.input_topics()}
        self._commands: list[tuple[tuple[str, int], int, dict[str, Any]]] = []  # read, not yet applied
        self.command_positions: dict[tuple[str, int], int] = {}
        self._consumer: Consumer | None = None
        self._lag = LagProbe(self.metrics.lag, self.group)

    def input_topics(self) -> tuple[str, ...]:
        """What the service reads: the inputs, and the operator commands when it trades."""
        return INPUTS + ((COMMANDS,) if self.options.traders else ())

    # --- checkpoints ------------------------------------------------------------------------------
    def _restore(self) -> tuple[CrossVenueState, dict[tuple[str, int], int]]:
        params = self.options.params
        if not self.checkpoint_path.exists():
            return CrossVenueState(params), {}
        data = orjson.loads(self.checkpoint_path.read_bytes())
        positions = {(t, p): o for t, p, o in data.get("positions", [])}
        if data.get("version") != CHECKPOINT_VERSION or data.get("fingerprint") != self.options.fingerprint():
            log.warning("checkpoint written with other parameters: state starts empty", path=str(self.checkpoint_path))
            return CrossVenueState(params), {}
        state = CrossVenueState.from_dict(params, data["state"])
        self.ahead_filter = AheadOfBooks(self.options.max_ahead_ms, data.get("newest_book"), data.get("ahead", 0))
        saved = data.get("traders", {})
        for trader in self.options.traders:
            entry = saved.get(trader.name)
            if entry is not None and entry.get("fingerprint") == trader.fingerprint():
                trader.load_dict(entry["state"])
                log.info("watchlist strategy state restored", strategy=trader.name)
            else:
                log.warning(
                    "watchlist strategy starts with an empty state (not in the checkpoint, or written "
                    "with another configuration)",
                    strategy=trader.name,
                )
        log.info(
            "watchlist state restored", coins=len(state.coins), partitions=len(positions), next_eval=state.next_eval
        )
        return state, positions

    def checkpoint(self) -> bool:
        """Flush the outputs, write state + positions, commit the positions; False when outputs are not
        durable (nothing is written or committed: the inputs will be read again)."""
        remaining = self.publisher.flush(10)
        if remaining or not self.publisher.healthy:
            log.error("outputs not delivered; no checkpoint", undelivered=remaining, failed=len(self.publisher.failed))
            return False
        self.positions = {**self.positions, **self.merge.positions(), **self.command_positions}
        data = {
            "version": CHECKPOINT_VERSION,
            "fingerprint": self.options.fingerprint(),
            "group": self.group,
            "positions": [[t, p, o] for (t, p), o in sorted(self.positions.items())],
            "newest_book": self.ahead_filter.newest_book,
            "ahead": self.ahead_filter.dropped,
            "state": self.state.to_dict(),
            "traders": {t.name: {"fingerprint": t.fingerprint(), "state": t.to_dict()} for t in self.options.traders},
        }
        self.checkpoint_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.checkpoint_path, orjson.dumps(data))
        self.metrics.checkpoints.inc()
        if self._consumer is not None and self.positions:
            offsets = [TopicPartition(self.prefix + t, p, o) for (t, p), o in sorted(self.positions.items())]
            try:
                self._consumer.commit(offsets=offsets, asynchronous=False)
            except KafkaException as exc:
                log.warning("offset commit failed", error=exc.args[0].str())
        return True

    def forget_foreign_positions(self) -> int:
        """Drop the checkpoint's positions where the group has no committed offset: the checkpoint was
        written against another incarnation of the topics (deleted and created again under the same
        names), whose offsets mean nothing here. The state is kept (its windows expire by event
        time). Returns how many positions were dropped."""
        if not self.positions:
            return 0
        consumer = Consumer(consumer_config(self.bootstrap, self.group))
        try:
            answer = committed_offsets(consumer, [TopicPartition(self.prefix + t, p) for t, p in self.positions], 10)
        except (KafkaException, CommittedOffsetError) as exc:  # unknown is not "none committed": keep them
            log.warning("committed offsets not readable; checkpoint positions kept", error=str(exc))
            return 0
        finally:
            consumer.close()
        foreign = {(self._names.get(tp.topic, tp.topic), tp.partition) for tp in answer if tp.offset < 0}
        for key in foreign:
            del self.positions[key]
        if foreign:
            log.warning(
                "checkpoint positions the group never committed ignored (topics recreated)", partitions=len(foreign)
            )
        return len(foreign)

    # --- lifecycle --------------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        self._consumer = Consumer(
            consumer_config(
                self.bootstrap,
                self.group,
                **{"auto.offset.reset": self.options.start_from, "enable.partition.eof": True},
            )
        )
        self._consumer.subscribe(
            [self.prefix + name for name in self.input_topics()], on_assign=self._on_assign, on_revoke=self._on_revoke
        )
        now = time.monotonic()
        next_checkpoint = now + self.options.checkpoint_interval_s
        stalled_since = None
        try:
            while not stop.is_set():
                for msg in self._consumer.consume(num_messages=500, timeout=0.05):
                    tp = (self._names.get(msg.topic(), msg.topic()), msg.partition())
                    if msg.error():
                        if msg.error().code() != KafkaError._PARTITION_EOF:
                            log.warning("consume error", error=msg.error().str())
                        elif tp[0] != COMMANDS:
                            self.merge.at_end(tp)
                        continue
                    if tp[0] == COMMANDS:
                        self._read_command(tp, msg)
                    else:
                        self._read(tp, msg)
                now = time.monotonic()
                released = self.merge.release()
                if released or not self.merge.held():
                    stalled_since = None
                elif stalled_since is None:
                    stalled_since = now
                elif now - stalled_since >= self.options.max_hold_s:
                    released = self.merge.release(force=True)
                    if released:
                        log.warning(
                            "inputs released without event-time order", released=len(released), held=self.merge.held()
                        )
                    stalled_since = None
                if released:
                    self._process(released)
                if self._commands:
                    self._apply_commands()
                self.publisher.poll(0)
                self._lag.maybe_refresh(self._consumer, self._consumer.assignment(), now)
                self.metrics.held.set(self.merge.held())
                if now >= next_checkpoint:
                    next_checkpoint = now + self.options.checkpoint_interval_s
                    self.checkpoint()
        finally:
            self.status = "stopping"
            self.checkpoint()
            self._consumer.close()
            self._consumer = None
            self.status = "stopped"

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            known = self.positions.get((self._names.get(tp.topic, tp.topic), tp.partition))
            if known is not None:
                tp.offset = known
        consumer.assign(partitions)
        self.merge.assign(
            {
                (self._names.get(tp.topic, tp.topic), tp.partition): tp.offset if tp.offset >= 0 else None
                for tp in partitions
                if self._names.get(tp.topic) != COMMANDS
            }
        )
        total = sum(len(topic_metadata(consumer, self.prefix + name).partitions) for name in INPUTS)
        self.sole_reader = len(self.merge.partitions()) == total
        if not self.sole_reader:
            log.error(
                "another watchlist service shares the input partitions: a coin's legs are split",
                assigned=len(self.merge.partitions()),
                partitions=total,
            )
        self.status = "running" if self.sole_reader else "degraded"
        log.info(
            "watchlist partitions assigned",
            partitions=len(partitions),
            sole_reader=self.sole_reader,
            restored_positions=sum(1 for tp in partitions if tp.offset >= 0),
        )

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # what is held is read again from the checkpoint's positions by whoever gets the partitions
        self.checkpoint()
        self.merge.revoke(
            [
                (self._names.get(tp.topic, tp.topic), tp.partition)
                for tp in partitions
                if self._names.get(tp.topic) != COMMANDS
            ]
        )
        self._commands = []  # read again from the checkpoint's position by whoever gets the partition
        self.status = "rebalancing"

    def _read(self, tp: tuple[str, int], msg) -> None:
        name = tp[0]
        self.metrics.inputs.labels(name).inc()
        try:
            record = self.serde.decode(msg.value())
            when = int(record[ENGINE_INPUT_TIME[name]])
            event = event_from_record(name, record)
        except Exception as exc:  # the engine dead-letters undecodable md.* records; here: skip and count
            self.metrics.decode_errors.labels(name).inc()
            log.debug("input skipped", topic=name, offset=msg.offset(), error=str(exc))
            self.merge.add(tp, msg.offset(), None)
            return
        self.merge.add(tp, msg.offset(), when, event)

    def _read_command(self, tp: tuple[str, int], msg) -> None:
        try:
            record = self.serde.decode(msg.value())
        except Exception as exc:  # noqa: BLE001 - a command that cannot be read is skipped, loudly
            log.error("operator command not decodable: skipped", offset=msg.offset(), error=str(exc))
            self.command_positions[tp] = msg.offset() + 1
            return
        self._commands.append((tp, msg.offset(), record))

    def _apply_commands(self) -> None:
        """Every command read so far, after the inputs released so far; then a checkpoint (see the
        module docstring: a command is applied once, across restarts)."""
        commands, self._commands = self._commands, []
        for tp, offset, record in commands:
            if record.get("status") == "requested":
                log.info(
                    "operator command",
                    command_id=record.get("command_id"),
                    action=record.get("action"),
                    strategy=record.get("strategy"),
                    coin=record.get("coin"),
                    who=record.get("who"),
                )
            for trader in self.options.traders:
                trader.command(record)
                self._publish_trading(trader)
            self.command_positions[tp] = offset + 1
        self.checkpoint()

    def _inputs(self, released: list[tuple[int, Any, int, Any]]):
        """The released inputs, less those more than ``max_ahead_ms`` ahead of the newest book
        (``merge.AheadOfBooks``: an indicator stamped with a replay's wall clock)."""
        keep = self.ahead_filter.keep
        return [event for time_ms, _, _, event in released if keep(time_ms, event)]

    def _process(self, released: list[tuple[int, Any, int, Any]]) -> None:
        events = self._inputs(released)
        for features in self.state.feed(events):
            self.metrics.last_eval.set(features.time_ms / 1000)
            if features.time_ms % self.options.publish_interval_ms == 0:
                self._publish(features)
        for trader in self.options.traders:
            trader.feed(events)
            self._publish_trading(trader)
        for reason, count in (*self.state.counters.items(), ("ahead_of_books", self.ahead_filter.dropped)):
            self.metrics.dropped.labels(reason).set(count)

    def _publish(self, features: CoinFeatures) -> None:
        records = feature_records(features, self.options.params.sweep_notional_usd)
        for record in records:
            self.publisher.publish(TOPIC, features.coin, record)
        self.published += len(records)
        self.metrics.records_out.inc(len(records))
        self.metrics.evaluations.inc()

    def _publish_trading(self, trader: Any) -> None:
        for kind, coin, record in trader.take():
            self.metrics.trading.labels(trader.name, kind).inc()
            topic = trader.topics.get(kind)
            if topic is None:
                log.debug("watchlist exit blocked", strategy=trader.name, coin=coin, **record)
                continue
            self.publisher.publish(topic, coin, record)
            if kind == "signal":
                log.info(
                    "watchlist signal",
                    strategy=trader.name,
                    signal_id=record["signal_id"],
                    status=record["status"],
                    reason=record["reason"],
                )
            elif kind == "command":
                log.info(
                    "operator command answered",
                    strategy=trader.name,
                    command_id=record["command_id"],
                    status=record["status"],
                    detail=record["detail"],
                )

    def health(self) -> dict[str, Any]:
        status = self.status
        detail = None
        if status == "running" and not self.publisher.healthy:
            status = "degraded"
            detail = "degraded: outputs undeliverable"
        elif status == "degraded" and not self.sole_reader:
            detail = "degraded: not sole reader (another watchlist service shares the input partitions)"
        body: dict[str, Any] = {
            "status": status,
            "coins": len(self.state.coins),
            "held": self.merge.held(),
            "published": self.published,
            "next_eval": self.state.next_eval,
            "dropped": {**self.state.counters, "ahead_of_books": self.ahead_filter.dropped},
            "sole_reader": self.sole_reader,
            "strategies": {t.name: dict(t.counters) for t in self.options.traders},
        }
        if detail:
            body["detail"] = detail
        return body


async def run_watchlist(settings: Settings, options: WatchlistOptions | None = None) -> int:
    """Entry point of `tapeflow cross-venue`; returns the process exit code."""
    from stream_apps.faust_app.priming import prime_group_offsets
    from tapeflow_runtime.endpoints import resolve_broker
    from tapeflow_runtime.errors import TapeflowError
    from tapeflow_runtime.paths import StackPaths

    options = options or WatchlistOptions()
    try:
        bootstrap = resolve_broker(settings, StackPaths(settings.home))
        await asyncio.to_thread(
            ensure_topics,
            bootstrap,
            settings.topic_prefix,
            [topic_spec(n) for n in (*INPUTS, *options.output_topics())],
        )
    except (TapeflowError, KafkaException) as exc:
        log.error("no Kafka", error=str(exc))
        return 2
    serde = AvroSerde(registry_from_url(settings.schema_registry_url))

    def begin() -> WatchlistService:
        """The service; a new group is primed from history (only partitions it never committed)."""
        service = WatchlistService(settings, bootstrap, serde, options)
        service.forget_foreign_positions()
        if options.prime_history_ms is not None:
            primed = prime_group_offsets(
                bootstrap,
                service.group,
                [service.prefix + n for n in INPUTS],
                int(time.time() * 1000) - options.prime_history_ms,
            )
            if primed:
                log.info(
                    "new watchlist group primed from history",
                    partitions=len(primed),
                    minutes=options.prime_history_ms / 60_000,
                )
        return service

    service = await asyncio.to_thread(begin)

    def health() -> dict[str, Any]:
        return {**service.health(), "topic_prefix": service.prefix}

    ran = await run_thread_with_endpoint(
        service.run,
        build_app(service.metrics.registry, health, frozenset({"running"})),
        options.metrics_host,
        options.metrics_port,
        log,
        options.stop,
        started=lambda port: log.info(
            "watchlist started",
            metrics_port=port,
            group=service.group,
            venues=list(options.params.venues),
            strategies=[t.name for t in options.traders],
            publish_interval_ms=options.publish_interval_ms,
        ),
    )
    code = 0 if ran and service.publisher.healthy else 1
    log.info("watchlist stopped", code=code, published=service.published)
    return code
