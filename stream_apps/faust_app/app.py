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

Exactly-once (``processing_guarantee="exactly_once"``, the stack's default): Faust keeps one
transactional producer per input partition (transactional id ``<app_id>-<group>-<partition>``), and
every output, snapshot and input offset of that partition goes into its open transaction. Faust's
commit timer (``commit_interval_s``) commits them, one transaction per partition per interval, not
per record; each commit first snapshots every key with unsaved input (``transaction_boundary``), so a
transaction holds the outputs, the state and the offsets of the same inputs, and a worker killed
between two commits leaves an aborted transaction its successor redoes exactly. A restarted or
rebalanced worker that takes a partition initialises the same transactional id, which aborts the old
owner's open transaction and fences it: a paused worker that wakes up (a zombie) has its writes
refused (``ProducerFenced``) and crashes. The worker reads committed records only. Before it
processes any input after an assignment, it checks that the table recovery read every changelog
partition it owns to its end (``_check_restored``): its state is the state of the committed offsets. The baseline
``at_least_once`` keeps idempotent outputs (deterministic ids and contents): redelivery rewrites
identical records, which readers that key by id (the sink) absorb. A broker that refuses Faust's
transactional producer (transactions disabled, or an InitProducerId version it does not serve) is
asked once before the worker joins its group: the worker stops with ``TransactionsUnavailable``
instead of crashing in the middle of a rebalance.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import faust
import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from faust.types import TP

from schemas.catalogue import PROGRESS_TOPIC, SYMBOL_PARTITIONS
from schemas.registry import registry_from_url
from schemas.serde import AvroSerde
from stream_apps.core.engine import EngineParams
from stream_apps.core.strategy import StrategyConfig, load_strategy
from tapeflow_runtime.settings import ConfigError

from .bulk_consumer import BulkConsumer, BulkTransport, PromptTableManager
from .config import INPUT_TOPICS, STATE_TABLE, EngineAppConfig
from .effects_runner import EffectsRunner
from .metrics import EngineAppMetrics
from .outputs import OutputEncoder, OutRecord
from .processor import Effects, EngineProcessor
from .rollouts import CATCH_UP_S, follow_topics

log = structlog.get_logger("engine")
TICK_S = 0.25
#: the longest a quiet worker's ticker sleeps without input (an idle stack's timers are its CPU)
IDLE_TICK_S = 5.0
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
            steps[i][(tp.topic, tp.partition)] = batch[start : start + size]
    return steps


class TransactionsUnavailable(ConfigError):
    """``exactly_once`` was asked for and the broker refuses the transactional producer Faust uses
    (a configuration that cannot run: the CLI exits 2, as for other configuration errors)."""


async def require_transactions(bootstrap: str, transactional_id: str) -> None:
    """Open (and close) one transactional producer as Faust's would: InitProducerId is where a broker
    that cannot serve aiokafka's transactions says so. Asking before the worker joins its group turns
    a crash in the middle of a rebalance into one clear refusal. The probe's id is its own (``...-preflight``), so it fences no worker."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, transactional_id=transactional_id, enable_idempotence=True, acks="all"
    )
    try:
        await producer.start()
    except KafkaError as exc:
        raise TransactionsUnavailable(
            f"processing_guarantee=exactly_once needs a broker that accepts Faust's transactional "
            f"producers; {bootstrap} refused one ({exc!r}). "
            f"Run at-least-once (the default: outputs are idempotent) or enable transactions on the "
            f"broker"
        ) from exc
    finally:
        await producer.stop()


class StateIncomplete(RuntimeError):
    """Faust's table recovery ended before the changelog was read to its end: processing inputs from
    the committed offsets with that state would write wrong outputs, so the worker stops instead."""


class _EngineFaustApp(faust.App):
    """A Faust app whose consumer delivers the engine inputs in bulk (see ``bulk_consumer``)."""

    def _new_transport(self) -> Any:
        return BulkTransport(self.conf.broker_consumer, self)


def _broker_urls(bootstrap: str) -> list[str]:
    return [f"kafka://{host.strip()}" for host in bootstrap.split(",") if host.strip()]


class EngineWorker:
    """One engine worker: the Faust app, the processor, and the order in which effects reach Kafka."""

    def __init__(
        self,
        config: EngineAppConfig,
        strategies: Sequence[StrategyConfig] | None = None,
        metrics: EngineAppMetrics | None = None,
    ) -> None:
        self.config = config
        self.strategies = (
            list(strategies) if strategies is not None else [load_strategy(p) for p in config.strategy_files]
        )
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
            TableManager=PromptTableManager,
        )
        # What faust.Worker sets, and before anything reads ``in_transaction``: Faust caches that
        # property (and the consumer copies it when it is created), so set later it stays False and
        # ``exactly_once`` silently runs at-least-once.
        self.app.in_worker = True
        # bytes in, bytes out: Faust then reads and writes the changelog with the "raw" codec
        self.table = self.app.Table(
            STATE_TABLE,
            partitions=SYMBOL_PARTITIONS,
            key_type=bytes,
            value_type=bytes,
            help="engine state per exchange:symbol",
        )
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
        self._follower: asyncio.Task | None = None  # config.rollouts and config.applied (``rollouts``)
        self._following = asyncio.Event()  # set: stop following
        self._rollouts_read = asyncio.Event()  # set: both config topics read to their end once
        self._rollouts_wait_until: float | None = None  # loop time: fetches wait for that read until then
        self._input_arrived = asyncio.Event()  # wakes a ticker sleeping through a quiet spell
        self.crash_seen = asyncio.Event()  # set with ``crashed``: the worker's runner waits on it
        self.started_at: float | None = None
        self.batches = 0
        self.crashed: BaseException | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        if self.app.in_transaction:
            await require_transactions(self.config.bootstrap, f"{self.app.conf.id}-preflight")
        consumer = self.app.consumer
        assert isinstance(consumer, BulkConsumer)
        consumer.bulk_topics = frozenset(self.read_topics)
        consumer.fetch_max_wait_ms = self.config.fetch_max_wait_ms
        consumer.bulk_handler = self
        self.app.topics.add(self.inputs)  # subscribe (there is no agent to do it)
        self.app.on_rebalance_complete.connect(self._check_restored)
        await self.app.start()
        self.started_at = time.monotonic()
        self._ticker = asyncio.create_task(self._tick_forever())
        if self.config.follow_rollouts:
            self._follower = asyncio.create_task(self._follow_rollouts())

    async def stop(self) -> None:
        self._following.set()
        if self._follower is not None:
            self._follower.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._follower
            self._follower = None
        if self._ticker is not None:
            self._ticker.cancel()
            try:
                await self._ticker
            except asyncio.CancelledError:
                pass
            self._ticker = None
        await self.app.stop()

    def health(self) -> dict[str, Any]:
        if self.crashed is not None or self.app.crash_reason is not None:
            return {"status": "crashed", "detail": repr(self.crashed or self.app.crash_reason)}
        if self.started_at is None:
            return {"status": "starting", "detail": "joining the group"}
        assigned = sorted({tp.partition for tp in self.app.consumer.assignment() if tp.topic in self.input_topics})
        state = "rebalancing" if self.app.rebalancing else "running"
        waiting = self.processor.progress.waiting()
        progress = f", {len(waiting)} symbols released by progress markers" if waiting else ""
        return {
            "status": state,
            "detail": f"partitions {assigned}, {len(self.processor.owned)} symbols, {self.batches} batches{progress}",
        }

    async def _check_restored(self, sender: Any = None, **_: Any) -> None:
        """After Faust's table recovery, before the input partitions are resumed: every changelog
        partition this worker owns has been read to its end (the last stable offset, asked of the
        broker now). The engine's state must be the state of the committed input offsets: a recovery
        that ended early (faust-streaming 0.15.3 measured its work against a cached offset that was
        None before the first fetch, see ``ShortWaitConsumerThread._highwaters``) restarted symbols
        from empty state in the middle of their input. Rather than write wrong outputs, the worker
        crashes (exit 1; its supervisor restarts it and the recovery runs again)."""
        changelog = self.table.changelog_topic.get_topic_name()
        tps = sorted(tp for tp in self.app.tables.recovery.active_tps if tp.topic == changelog)
        if not tps:
            return
        consumer = self.app.consumer
        generation = self.app.consumer_generation_id
        short: dict[int, tuple[int | None, int]] = {}
        try:
            ends = await consumer.highwaters(*tps)
            for tp in tps:
                end = ends.get(tp)
                position = await consumer.position(tp)
                if end is not None and (position is None or position < end):
                    short[tp.partition] = (position, end)
        except KafkaError:
            if self.app.consumer_generation_id != generation:
                return  # a new rebalance began: its recovery is checked when it completes
            raise
        if short:
            exc = StateIncomplete(
                f"table recovery ended before the end of {changelog}: partition -> (read to, end) {short}"
            )
            log.error("engine state not restored", error=str(exc))
            await self._crash(exc)
            raise exc
        log.info("engine state restored", keys=len(self.table.data), partitions=[tp.partition for tp in tps])

    # -- bulk handler (called by BulkConsumer) -------------------------------------------------
    async def on_records(self, records: Mapping[TP, Sequence[Any]], generation: int) -> None:
        if self._follower is not None and not self._rollouts_read.is_set():
            # the recorded switch points first (``rollouts``); bounded once per worker, not per fetch:
            # following never stops the engine, and a reader that keeps failing (it is retried) must
            # not hold every fetch for the bound
            loop = asyncio.get_running_loop()
            if self._rollouts_wait_until is None:
                self._rollouts_wait_until = loop.time() + CATCH_UP_S + IDLE_TICK_S
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._rollouts_read.wait(), max(self._rollouts_wait_until - loop.time(), 0.0))
        began = time.perf_counter()
        consumer: BulkConsumer = self.app.consumer  # type: ignore[assignment]
        async with self._lock:
            if not consumer.flow_active or self.app.consumer_generation_id != generation:
                # fetched before a rebalance began and waited for the lock while ``flush`` forgot
                # every symbol: processing it now would rebuild state for partitions this worker
                # may no longer own (and a later flush would write that stale state back). The
                # new assignment seeks to the committed offsets, so the records are read again.
                log.info("dropped a fetch that arrived during a rebalance (%d partitions)", len(records))
                return
            consumer.hand_over(records)  # now in the processor's hands: they count as read (``caught_up``)
            assigned = [tp for tp in consumer.assignment() if tp.topic in consumer.bulk_topics]
            await consumer.resolve_start_offsets(assigned)
            steps = fetch_steps(records, STEP_RECORDS)
            with self.processor.handling():  # no partition can deliver meanwhile: not silence
                for i, step in enumerate(steps):
                    if i and (not consumer.flow_active or self.app.consumer_generation_id != generation):
                        break  # a rebalance began: what is left is read again after the new assignment
                    later = {tp for following in steps[i + 1 :] for tp in following}
                    effects = self.processor.on_records(
                        step,
                        lambda topic, partition: (topic, partition) not in later and self._caught_up(topic, partition),  # noqa: B023 - called within this iteration
                    )
                    await self._apply(effects)
                    if i + 1 < len(steps):
                        await asyncio.sleep(0)  # a catch-up fetch is large: let /health, timers and commits run
            for tp in assigned:
                lag = consumer.lag(tp)
                if lag is not None:
                    self.metrics.lag.labels(self.app.conf.id, tp.topic, str(tp.partition)).set(lag)
        self.batches += 1
        self._input_arrived.set()
        self.metrics.batch_seconds.observe(time.perf_counter() - began)

    async def flush(self) -> None:
        """Before a rebalance commits or at shutdown: persist every symbol, then forget them all
        (eager rebalancing revokes every partition; what comes back is restored from the table)."""
        async with self._lock:
            await self._apply(self.processor.flush())
            self.processor.forget_all()

    @asynccontextmanager
    async def transaction_boundary(self) -> AsyncIterator[None]:
        """Around every commit with ``exactly_once`` (``BulkConsumer.force_commit``): no fetch or tick
        performs effects meanwhile, every key with unsaved input is snapshotted and acknowledged first
        (``EngineProcessor.checkpoint``) and every earlier effect has been handed to the producer. A
        transaction then holds outputs, snapshots and offsets of the same inputs: after a crash the
        restored state resumes exactly where the committed outputs end."""
        async with self._lock:
            await self._apply(self.processor.checkpoint())
            await self._effects.settle()
            yield

    async def _tick_forever(self) -> None:
        while True:
            if self.processor.quiet():
                # nothing held, queued or unsaved: a tick would change nothing until input comes
                self._input_arrived.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._input_arrived.wait(), IDLE_TICK_S)
            await asyncio.sleep(TICK_S)
            consumer: BulkConsumer = self.app.consumer  # type: ignore[assignment]
            if not consumer.flow_active:
                continue
            try:
                async with self._lock:
                    if consumer.flow_active:
                        await self._apply(self.processor.tick(self._caught_up))
            except Exception as exc:
                log.exception("engine tick failed")
                await self._crash(exc)
                return

    async def _follow_rollouts(self) -> None:
        """Follow the rollout states (hot reload, ``rollouts``); a failure to read them leaves the
        engine on its revisions and is retried, it never stops the evaluations."""
        while not self._following.is_set():
            try:
                await follow_topics(
                    self.config.bootstrap, self.processor.rollouts, self._rollouts_changed, self._following
                )
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("following config.rollouts failed; retrying")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._following.wait(), IDLE_TICK_S)

    async def _rollouts_changed(self) -> None:
        # a new state is scheduled by each symbol's next input (``EngineProcessor._process``): the
        # switch then commits with that input's offsets
        self._rollouts_read.set()

    async def _crash(self, exc: BaseException) -> None:
        self.crashed = exc
        self.crash_seen.set()
        await self.app.crash(exc)

    # -- effects, in their safe order ----------------------------------------------------------
    def _caught_up(self, topic: str, partition: int) -> bool:
        return self.app.consumer.caught_up(TP(topic, partition))  # type: ignore[attr-defined]

    def _start_offset(self, topic: str, partition: int) -> int | None:
        return self.app.consumer.start_offset(TP(topic, partition))  # type: ignore[attr-defined]

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
            await self._send(OutRecord(changelog, partition, raw_key, blob, None, partition))
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
            await send(
                record.topic,
                record.key,
                record.value,
                record.partition,
                timestamp,
                None,
                transactional_id=f"{self.app.conf.id}-{group}-{source}",
            )
        else:
            send = self.app.producer.send_and_wait if wait else self.app.producer.send
            await send(record.topic, record.key, record.value, record.partition, timestamp, None)
