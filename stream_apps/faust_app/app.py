"""``EngineWorker``: the Faust app that drives the engine core from the ``md.*`` topics.

Topology (one worker process; start more with the same ``app_id`` to share the partitions):

    md.trades, md.book, md.mark, md.liquidations, md.indicators   (6 partitions, key exchange:symbol)
        │ bulk delivery per fetch (bulk_consumer) ─► EngineProcessor (decode, align, engine per symbol)
        ├─► bars.1m, features, signals          same partition as the input, event-time timestamps
        ├─► table ``engine-state`` (changelog)  one snapshot per symbol, at most every snapshot_interval_s
        └─► acks ─► Faust commits offsets        only for inputs a written snapshot contains

State lives in a plain keyed Faust table (``exchange:symbol`` → compressed engine snapshot), not in
windowed tables: the engine's own bucketed windows are the aggregation, and Faust's windowed tables
have open recovery and expiry bugs. Snapshots are written straight to the changelog partition the
symbol's input comes from (with ``exactly_once``, inside that partition's transaction), so the table
is co-partitioned with the inputs whichever partitioner the producers used.

Exactly-once: ``processing_guarantee="exactly_once"`` switches Faust to one transactional producer per
input partition; outputs, snapshots and offsets then commit atomically. The baseline is
at-least-once with idempotent outputs (deterministic ids and contents), which is what makes
redelivery harmless on a broker without transactions too. Faust's producers (aiokafka) open a
transaction with InitProducerId v0, which the embedded Tansu broker (0.6) refuses; the worker asks
the broker once before joining and stops with ``TransactionsUnavailable`` instead of crashing later.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import Any

import faust
import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from faust.tables.manager import TableManager
from faust.types import TP

from schemas.catalogue import SYMBOL_PARTITIONS
from schemas.registry import registry_from_url
from schemas.serde import AvroSerde
from stream_apps.core.engine import EngineParams
from stream_apps.core.strategy import StrategyConfig, load_strategy
from tapeflow_runtime.settings import ConfigError
from tapeflow_runtime.starvation import StarvationWatch, StuckPhaseWatch

from .bulk_consumer import BulkConsumer, BulkTransport
from .config import INPUT_TOPICS, PROGRESS_TOPIC, STATE_TABLE, EngineAppConfig
from .effects_runner import EffectsRunner
from .metrics import EngineAppMetrics
from .outputs import OutputEncoder, OutRecord
from .processor import Effects, EngineProcessor

log = structlog.get_logger("engine")
TICK_S = 0.25
STARVATION_SAMPLE_S = 5.0
STEP_RECORDS = 5_000  # per partition: bounds the event-loop time one step of a large fetch takes


def fetch_steps(records: Mapping[TP, Sequence[Any]], size: int) -> list[dict[tuple[str, int], Sequence[Any]]]:
    """Cut a fetch into steps of at most ``size`` records per partition, each partition in offset order
    (step i holds every partition's i-th slice), so the engine's work between two yields to the event
    loop stays bounded when a worker catches up on hours of input."""
    steps: list[dict[tuple[str, int], Sequence[Any]]] = []
    for tp, batch in records.items():
        for i, start in enumerate(range(0, len(batch), size)):
            if i == len(steps):
                steps.append({})
            steps[i][(tp.topic, tp.partition)] = batch[start:start + size]
    return steps


class TransactionsUnavailable(ConfigError):
    """``exactly_once`` was asked for and the broker refuses the transactional producer Faust uses
    (a configuration that cannot run: the CLI exits 2, as for other configuration errors)."""


async def require_transactions(bootstrap: str, transactional_id: str) -> None:
    """Open (and close) one transactional producer as Faust's would: InitProducerId is where a broker
    that cannot serve aiokafka's transactions says so (Tansu 0.6 answers UNKNOWN_SERVER_ERROR to v0).
    Asking before the worker joins its group turns a crash in the middle of a rebalance into one
    clear refusal. The probe's id is its own (``...-preflight``), so it fences no worker."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=transactional_id,
                                enable_idempotence=True, acks="all")
    try:
        await producer.start()
    except KafkaError as exc:
        raise TransactionsUnavailable(
            f"processing_guarantee=exactly_once needs a broker that accepts Faust's transactional "
            f"producers; {bootstrap} refused one ({exc!r}), as the embedded Tansu broker always does. "
            f"Run at-least-once (the default: outputs are idempotent) or point the engine at Kafka") from exc
    finally:
        await producer.stop()


class _EngineFaustApp(faust.App):
    """A Faust app whose consumer delivers the engine inputs in bulk (see ``bulk_consumer``)."""

    def _new_transport(self) -> Any:
        return BulkTransport(self.conf.broker_consumer, self)


class _PromptTableManager(TableManager):
    """Faust's table manager without the 1 s sleep its ``on_start`` begins with (faust-streaming
    0.15.3, ``faust/tables/manager.py``), which gives an app's module-level tables time to be
    declared. The engine declares its one table before the app starts, so the sleep only delayed
    every start, and the move to a new topic epoch (``following``), by 1 s (measured: an engine app
    on Tansu started in 4.1 s, 1.0 of them in that sleep)."""

    async def on_start(self) -> None:
        if not self.should_stop:
            await self._update_channels()
            await self.recovery.start()


def _broker_urls(bootstrap: str) -> list[str]:
    return [f"kafka://{host.strip()}" for host in bootstrap.split(",") if host.strip()]


class EngineWorker:
    """One engine worker: the Faust app, the processor, and the order in which effects reach Kafka."""

    def __init__(self, config: EngineAppConfig, strategies: Sequence[StrategyConfig] | None = None,
                 metrics: EngineAppMetrics | None = None, gate: asyncio.Event | None = None) -> None:
        """``gate``: when given, no input is applied (and nothing evaluated) until it is set: a worker
        on the next topic epoch joins its group while the old epoch's worker drains, and receives the
        carried state (``adopt``) before the gate opens (``following``)."""
        self.config = config
        self.gate = gate
        self.strategies = list(strategies) if strategies is not None else [load_strategy(p) for p in config.strategy_files]
        self.metrics = metrics or EngineAppMetrics()
        self.serde = AvroSerde(registry_from_url(config.schema_registry_url))
        self.input_topics = tuple(config.topic(name) for name in INPUT_TOPICS)
        self.read_topics = (*self.input_topics, config.topic(PROGRESS_TOPIC))  # inputs and their progress markers
        self.app = _EngineFaustApp(
            config.app_id,
            broker=_broker_urls(config.bootstrap),
            store="memory://",
            datadir=str(config.datadir),
            processing_guarantee=config.processing_guarantee,
            broker_session_timeout=config.broker_session_timeout_s,
            broker_heartbeat_interval=config.broker_heartbeat_interval_s,
            broker_rebalance_timeout=config.broker_rebalance_timeout_s,
            broker_max_poll_interval=config.broker_max_poll_interval_s,
            broker_commit_interval=config.commit_interval_s,
            consumer_max_fetch_size=config.max_fetch_bytes,
            consumer_auto_offset_reset="earliest",
            topic_allow_declare=True,
            topic_partitions=SYMBOL_PARTITIONS,
            table_standby_replicas=0,
            stream_wait_empty=True,
            web_enabled=False,
            worker_redirect_stdouts=False,
            TableManager=_PromptTableManager,
        )
        # What faust.Worker sets, and before anything reads ``in_transaction``: Faust caches that
        # property (and the consumer copies it when it is created), so set later it stays False and
        # ``exactly_once`` silently runs at-least-once.
        self.app.in_worker = True
        # bytes in, bytes out: Faust then reads and writes the changelog with the "raw" codec
        self.table = self.app.Table(STATE_TABLE, partitions=SYMBOL_PARTITIONS, key_type=bytes, value_type=bytes,
                                    help="engine state per exchange:symbol")
        self.inputs = self.app.topic(*self.read_topics, key_serializer="raw", value_serializer="raw")
        self.processor = EngineProcessor(
            self.strategies,
            EngineParams(eval_interval_ms=config.eval_interval_ms, allowed_lateness_ms=config.allowed_lateness_ms),
            self.serde,
            OutputEncoder(self.serde, config.topic_prefix, config.signal_max_age_ms),
            self.metrics,
            self._load_snapshot,
            topic_prefix=config.topic_prefix,
            snapshot_interval_s=config.snapshot_interval_s,
            max_hold_s=config.max_hold_s,
            wait_for_progress=config.wait_for_progress,
            progress_timeout_s=config.progress_timeout_s,
            start_offset=self._start_offset,
        )
        self._lock = asyncio.Lock()
        self._effects = EffectsRunner(self._perform)
        self._ticker: asyncio.Task | None = None
        self._watcher: asyncio.Task | None = None
        self.starvation = StarvationWatch(config.starvation_window_s)
        self._next_slow_sample = 0.0  # while the consumer's fetches are spaced out (idle), sample no sooner
        self.stuck_rebalance = StuckPhaseWatch(config.starvation_window_s, "rebalancing")
        # held inputs that nothing releases: the caught-up rule releases within a fetch, a marker-waiting
        # key after progress_timeout_s, so a hold longer than that plus the window is a stall (seen on
        # Tansu after a takeover, with /health still "running": CI of e5e0cad)
        self.stuck_holding = StuckPhaseWatch(config.starvation_window_s + config.progress_timeout_s,
                                             "holding inputs without releasing any")
        # a broker that stops answering the watch's own questions must not read as health
        self.unsampled = StuckPhaseWatch(config.starvation_window_s, "input end offsets and positions unavailable")
        self.started_at: float | None = None
        self.batches = 0
        self.crashed: BaseException | None = None
        self.frozen = False
        self._snapshot_partition: dict[bytes, int] = {}  # key -> changelog partition, of what this worker wrote

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        if self.app.in_transaction:
            await require_transactions(self.config.bootstrap, f"{self.app.conf.id}-preflight")
        consumer = self.app.consumer
        assert isinstance(consumer, BulkConsumer)
        consumer.bulk_topics = frozenset(self.read_topics)
        consumer.fetch_max_wait_ms = self.config.fetch_max_wait_ms
        consumer.fetch_idle_wait_ms = self.config.fetch_idle_wait_ms
        consumer.fetch_idle_after_s = self.config.fetch_idle_after_s
        consumer.bulk_handler = self
        self.app.topics.add(self.inputs)  # subscribe (there is no agent to do it)
        await self.app.start()
        self.started_at = time.monotonic()
        self._ticker = asyncio.create_task(self._tick_forever())
        self._watcher = asyncio.create_task(self._watch_inputs_forever())

    async def freeze(self) -> None:
        """Apply nothing more and stop the timers, but stay in the group: a drained worker of a finished
        topic epoch, whose state is being carried while the next epoch's worker takes over (``stop``
        follows once that one runs)."""
        self.frozen = True
        for task in (self._watcher, self._ticker):
            if task is not None:
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
        self._watcher = self._ticker = None

    async def stop(self) -> None:
        await self.freeze()
        await self.app.stop()
        self.metrics.forget_group(self.app.conf.id)  # its partitions have no lag any more (a rollover's old group)

    def health(self) -> dict[str, Any]:
        if self.crashed is not None or self.app.crash_reason is not None:
            return {"status": "crashed", "detail": repr(self.crashed or self.app.crash_reason)}
        if self.started_at is None:
            return {"status": "starting", "detail": "joining the group"}
        assigned = sorted({tp.partition for tp in self.app.consumer.assignment() if tp.topic in self.input_topics})
        state = "rebalancing" if self.app.rebalancing else "running"
        if state == "running":
            starving = self.starvation.reason() or self.stuck_holding.reason() or self.unsampled.reason()
        else:
            starving = self.stuck_rebalance.reason()
        if starving:
            return {"status": "degraded", "detail": f"degraded: {starving}; partitions {assigned}"}
        waiting = self.processor.progress.waiting()
        progress = f", {len(waiting)} symbols released by progress markers" if waiting else ""
        return {"status": state, "detail": f"partitions {assigned}, {len(self.processor.owned)} symbols, "
                f"{self.batches} batches{progress}"}

    # -- bulk handler (called by BulkConsumer) -------------------------------------------------
    def adopt(self, snapshots: Mapping[bytes, tuple[int, bytes]]) -> None:
        """Take carried snapshots (key -> (partition, snapshot), already in this group's changelog) into
        the table this worker restored before they were written. Only before the gate opens."""
        assert self.gate is not None and not self.gate.is_set(), "adopt before the gate opens"
        for key, (partition, blob) in snapshots.items():
            self.table.data[key] = blob
            self._snapshot_partition[key] = partition

    def snapshots(self) -> dict[bytes, tuple[int, bytes]] | None:
        """Every key's newest snapshot with its changelog partition, from this worker's memory, when it
        holds them all: it owns every input partition and wrote or adopted every key in its table. A
        restarted worker's keys recovered by Faust are not known by partition here, and another worker
        may own some keys: None then (the carry reads the changelog)."""
        owned = {tp.partition for tp in self.app.consumer.assignment() if tp.topic in self.input_topics}
        if owned != set(range(SYMBOL_PARTITIONS)):
            return None
        data = dict(self.table.data.items())
        if any(key not in self._snapshot_partition for key in data):
            return None
        return {key: (self._snapshot_partition[key], blob) for key, blob in data.items()}

    async def on_records(self, records: Mapping[TP, Sequence[Any]], generation: int) -> None:
        if self.gate is not None and not self.gate.is_set():
            await self.gate.wait()  # the fetch waits with its records (none is lost or read twice)
        began = time.perf_counter()
        consumer: BulkConsumer = self.app.consumer  # type: ignore[assignment]
        async with self._lock:
            if self.frozen:  # a finished epoch's worker: its inputs are final and all applied
                log.warning("a frozen engine worker was handed %d partitions' records: not applied", len(records))
                return
            if not consumer.flow_active or self.app.consumer_generation_id != generation:
                # fetched before a rebalance began and waited for the lock while ``flush`` forgot
                # every symbol: processing it now would rebuild state for partitions this worker
                # may no longer own (and a later flush would write that stale state back). The
                # new assignment seeks to the committed offsets, so the records are read again.
                log.info("dropped a fetch that arrived during a rebalance (%d partitions)", len(records))
                return
            assigned = [tp for tp in consumer.assignment() if tp.topic in consumer.bulk_topics]
            await consumer.resolve_start_offsets(assigned)
            steps = fetch_steps(records, STEP_RECORDS)
            with self.processor.handling():  # no partition can deliver meanwhile: not silence
                for i, step in enumerate(steps):
                    if i and (not consumer.flow_active or self.app.consumer_generation_id != generation):
                        break  # a rebalance began: what is left is read again after the new assignment
                    later = {tp for following in steps[i + 1:] for tp in following}
                    effects = self.processor.on_records(
                        step, lambda topic, partition: (topic, partition) not in later and self._caught_up(topic, partition))
                    await self._apply(effects)
                    if i + 1 < len(steps):
                        await asyncio.sleep(0)  # a catch-up fetch is large: let /health, timers and commits run
            for tp in assigned:
                lag = consumer.lag(tp)
                if lag is not None:
                    self.metrics.lag.labels(self.app.conf.id, tp.topic, str(tp.partition)).set(lag)
        self.batches += 1
        self.metrics.batch_seconds.observe(time.perf_counter() - began)

    def finish_inputs(self) -> None:
        """Its topic epoch is finished: nothing more is written to its inputs
        (``EngineProcessor.finish_inputs``: the drain then does not wait out the progress timeout)."""
        self.processor.finish_inputs()

    async def snapshot_now(self) -> None:
        """Write every symbol's unsaved state now (not on the ``snapshot_interval_s`` timer), so that the
        inputs it holds become committable: a finished topic epoch's drain (``following``) would wait
        up to that interval for the timer's snapshot otherwise. Then commit what the snapshots made
        committable, as Faust's commit timer would within ``commit_interval_s`` (1 s): the drain waits
        for the group's commits, and every new-epoch input waits for the drain (live pace: the
        rollover's ~1 evaluation a second over the 2 s p99 target)."""
        async with self._lock:
            await self._apply(self.processor.flush())
        await self.app.consumer.commit()

    async def flush(self) -> None:
        """Before a rebalance commits or at shutdown: persist every symbol, then forget them all
        (eager rebalancing revokes every partition; what comes back is restored from the table)."""
        async with self._lock:
            await self._apply(self.processor.flush())
            self.processor.forget_all()

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            consumer: BulkConsumer = self.app.consumer  # type: ignore[assignment]
            if not consumer.flow_active or (self.gate is not None and not self.gate.is_set()):
                continue
            try:
                async with self._lock:
                    if consumer.flow_active:
                        await self._apply(self.processor.tick(self._caught_up))
            except Exception as exc:
                log.exception("engine tick failed")
                self.crashed = exc
                await self.app.crash(exc)
                return

    async def _watch_inputs_forever(self) -> None:
        """Every ``STARVATION_SAMPLE_S``: each input partition's fetch position against its end offset asked
        from the broker (``StarvationWatch``); ``health`` says ``degraded`` for one that receives records
        this worker does not read (Tansu past ~20,000 batches in a partition answers fetches with nothing),
        or whose fetch position stands below an end offset that does not move either (seen on Tansu
        after a takeover), and for a rebalance whose changelog recovery makes no progress
        (``StuckPhaseWatch``); also for inputs held that nothing releases for the window plus
        ``progress_timeout_s``, and for samples the broker has not answered for the window. The stack's
        supervisor restarts a worker that stays degraded (``stall_restart_s``)."""
        consumer: BulkConsumer = self.app.consumer  # type: ignore[assignment]
        while True:
            await asyncio.sleep(STARVATION_SAMPLE_S)
            now = time.monotonic()
            recovery = self.app.tables.recovery
            progress = (self.app.consumer_generation_id, sum(v for v in recovery.active_offsets.values() if v),
                        sum(v for v in recovery.standby_offsets.values() if v))
            self.stuck_rebalance.observe(now, bool(self.app.rebalancing), progress)
            held = self.processor.held()
            self.stuck_holding.observe(now, held > 0 and not self.app.rebalancing, self.processor.releases)
            if not consumer.flow_active or self.app.rebalancing:
                self.starvation.observe(now, {})  # positions restart with the new assignment
                self.unsampled.observe(now, False)
                continue
            idle = getattr(consumer, "idle_fetch", None)
            if idle is not None and idle.idle and now < self._next_slow_sample:
                # idle on the embedded broker: ask the end offsets only as often as the window needs
                # (a third of it), as the sink's and the executor's lag probes do; Tansu answers
                # ListOffsets by listing every batch of the partition
                continue
            self._next_slow_sample = now + self.starvation.window_s / 3
            partitions = [tp for tp in consumer.assignment() if tp.topic in consumer.bulk_topics]
            try:
                ends = await consumer.highwaters(*partitions) if partitions else {}
                positions = await asyncio.wait_for(
                    asyncio.gather(*(consumer.position(tp) for tp in partitions)), STARVATION_SAMPLE_S)
            except Exception as exc:  # noqa: BLE001 - a broker hiccup: sample again next time
                log.debug("end offsets unavailable: %r", exc)
                self.unsampled.observe(now, True)
                continue
            self.unsampled.observe(now, False)
            names = {tp: f"{tp.topic}[{tp.partition}]" for tp in partitions}
            self.starvation.observe(time.monotonic(), {
                names[tp]: (position, ends.get(tp)) for tp, position in zip(partitions, positions)},
                fetch_positioned=names.values())

    # -- effects, in their safe order ----------------------------------------------------------
    def _caught_up(self, topic: str, partition: int) -> bool:
        return self.app.consumer.caught_up(TP(topic, partition))  # type: ignore[attr-defined]

    def _start_offset(self, topic: str, partition: int) -> int | None:
        return self.app.consumer._start_offset.get(TP(topic, partition))  # type: ignore[attr-defined]

    def _load_snapshot(self, key: str) -> bytes | None:
        return self.table.data.get(key.encode())

    async def _apply(self, effects: Effects) -> None:
        """Perform ``effects`` after every earlier set, to the end even if this caller is cancelled
        (``EffectsRunner``: a stop cancels the timer task, a rebalance the fetch loop)."""
        await self._effects.run(effects)

    async def _perform(self, effects: Effects) -> None:
        for record in effects.outputs:
            await self._send(record)
        changelog = self.table.changelog_topic.get_topic_name()
        for partition, key, blob in effects.snapshots:
            raw_key = key.encode()
            self.table.data[raw_key] = blob
            self._snapshot_partition[raw_key] = partition
            # one snapshot per produce request, so each is its own record batch: Tansu answers
            # ListOffsets(latest) with the last *batch's* base offset + 1, and Faust's recovery stops
            # at that offset, so a second snapshot batched behind the first would not be restored
            await self._send(OutRecord(changelog, partition, raw_key, blob, None, partition), wait=True)
        consumer: BulkConsumer = self.app.consumer  # type: ignore[assignment]
        for (topic, partition), offsets in effects.acks.items():
            consumer.ack_offsets(TP(topic, partition), offsets)

    async def _send(self, record: OutRecord, wait: bool = False) -> None:
        timestamp = record.timestamp_ms / 1000.0 if record.timestamp_ms is not None else None
        if self.app.in_transaction:
            source = record.source_partition if record.source_partition is not None else record.partition
            group = self.app.assignor.group_for_topic(self.input_topics[0])
            producer = self.app.consumer.transactions.producer  # type: ignore[attr-defined]
            send = producer.send_and_wait if wait else producer.send
            await send(record.topic, record.key, record.value, record.partition, timestamp, None,
                       transactional_id=f"{self.app.conf.id}-{group}-{source}")
        else:
            send = self.app.producer.send_and_wait if wait else self.app.producer.send
            await send(record.topic, record.key, record.value, record.partition, timestamp, None)
