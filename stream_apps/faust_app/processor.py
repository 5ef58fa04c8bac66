"""``EngineProcessor``: one fetched batch of ``md.*`` records in, the Kafka effects of processing it out.

Why Kafka-free: the rules that make the worker correct — de-duplicate redelivered input by offset,
hold inputs for event-time alignment, run each symbol's engine, persist its state at most every
``snapshot_interval_s``, acknowledge an input only once a persisted state contains it — are plain
bookkeeping. Kept apart from Faust they are unit-tested without a broker, and the Faust layer
(``app``) only performs the returned ``Effects`` in their safe order: outputs, then state snapshots,
then acknowledgements. Faust flushes the producer before it commits acknowledged offsets (or commits
them in the same transaction with ``exactly_once``), so a committed offset always has its outputs and
a state that includes it on the broker; a crash in between replays input that the restored state
either already holds (skipped by offset) or has not seen (applied once). At least once, the outputs
of that replayed input are written again (identical records); with ``exactly_once`` each commit is
preceded by ``checkpoint`` and the transaction that held them was aborted, so they are written once.

Progress markers (``md.progress``, see ``progress``): a key whose source publishes them is released
marker by marker instead of by the caught-up rule, each marker once every partition it names has been
read up to its offsets. A marker counts as an input of its key: acknowledged with the snapshot that
holds its effect, skipped when redelivered, so a restart re-reads exactly the markers it has not
applied. At most ``MARKERS_PER_STEP`` markers of a key are applied per call (the rest on the next
fetch or tick, in the same order), so a fetch of thousands of markers does not block the worker.

Per key and input topic three offsets matter: ``seen`` (accepted into the aligner or the engine),
``applied`` (inside the engine state) and ``durable`` (inside the last snapshot written). A record at
or below ``seen`` is a redelivery and is skipped; if it is also at or below ``durable`` it is
acknowledged at once, otherwise with the next snapshot.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import structlog

from schemas.avro_columns import AvroColumns
from schemas.catalogue import DLQ_MD
from schemas.serde import AvroSerde
from stream_apps.book_decode import BookDecoder
from stream_apps.core.engine import EngineParams
from stream_apps.core.strategy import StrategyConfig

from .alignment import EVERYTHING, EventTimeAligner, Released
from .config import INPUT_TOPICS, PROGRESS_TOPIC
from .inputs import TRADES, RawRecord, decode_partition
from .keyed_engine import KeyedEngine
from .metrics import EngineAppMetrics
from .outputs import OutputEncoder, OutRecord
from .progress import Marker, ProgressBook, marker_from_record
from .rollouts import RolloutFollower

log = structlog.get_logger("engine")
CaughtUp = Callable[[str, int], bool]  # (full topic, partition) -> read to the end?
StartOffset = Callable[[str, int], int | None]  # (full topic, partition) -> where this assignment began
MARKERS_PER_STEP = 200


@dataclass
class Effects:
    """What to do on Kafka, in this order: produce ``outputs``, write ``snapshots`` (partition, key,
    state) to the table, then acknowledge ``acks`` ((full topic, partition) -> offsets)."""

    outputs: list[OutRecord] = field(default_factory=list)
    snapshots: list[tuple[int, str, bytes]] = field(default_factory=list)
    acks: dict[tuple[str, int], list[int]] = field(default_factory=dict)

    def ack(self, topic: str, partition: int, offsets: Sequence[int]) -> None:
        if offsets:
            self.acks.setdefault((topic, partition), []).extend(offsets)

    def __bool__(self) -> bool:
        return bool(self.outputs or self.snapshots or self.acks)


@dataclass
class _Owned:
    """A key this worker owns: its engine and the offset bookkeeping described in the module doc."""

    engine: KeyedEngine
    partition: int
    seen: dict[str, int]
    durable: dict[str, int]
    unsnapshotted: dict[str, list[int]] = field(default_factory=dict)
    last_snapshot: float = 0.0
    holding_since: float | None = None
    switched: bool = False  # a revision switch was scheduled since the last snapshot (``rollouts``)


class EngineProcessor:
    def __init__(
        self,
        strategies: Sequence[StrategyConfig],
        params: EngineParams,
        serde: AvroSerde,
        encoder: OutputEncoder,
        metrics: EngineAppMetrics,
        load_snapshot: Callable[[str], bytes | None],
        *,
        topic_prefix: str = "",
        snapshot_interval_s: float = 5.0,
        max_hold_s: float = 5.0,
        monotonic: Callable[[], float] = time.monotonic,
        wall_clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
        wait_for_progress: bool = False,
        progress_timeout_s: float = 60.0,
        start_offset: StartOffset = lambda topic, partition: None,
    ) -> None:
        self.strategies = list(strategies)
        self.params = params
        self.serde = serde
        self.book_decoder = BookDecoder(serde)  # md.book's reader, as long as the serde (``inputs``)
        self.trade_columns = AvroColumns.of_topic(serde, TRADES)  # md.trades' columnar reader (``inputs``)
        self.encoder = encoder
        self.metrics = metrics
        self.load_snapshot = load_snapshot
        self.prefix = topic_prefix
        self.snapshot_interval_s = snapshot_interval_s
        self.max_hold_s = max_hold_s
        self.monotonic = monotonic
        self.wall_clock_ms = wall_clock_ms
        self.aligner = EventTimeAligner(INPUT_TOPICS)
        self.owned: dict[str, _Owned] = {}
        self._catalogue = {topic_prefix + name: name for name in INPUT_TOPICS}
        self._last_delivery: dict[tuple[str, int], float] = {}  # (catalogue topic, partition) -> stall clock
        self._busy_s = 0.0  # time spent handling fetches (`handling`), not counted as a partition's silence
        self._handling_since: float | None = None
        self.progress_topic = topic_prefix + PROGRESS_TOPIC
        self.progress = ProgressBook(wait_for_progress, progress_timeout_s, monotonic)
        self.start_offset = start_offset
        self._read_to: dict[tuple[str, int], int] = {}  # (catalogue topic, partition) -> highest offset read
        self.rollouts = RolloutFollower(serde, topic_prefix)

    def held(self) -> int:
        """Inputs held back by the event-time aligner, over every owned key."""
        return sum(self.aligner.held(k) for k in self.owned)

    def quiet(self) -> bool:
        """Nothing for ``tick`` to do until new input arrives: no input held back or queued behind a
        marker, and every applied input snapshotted. Held or unsnapshotted input is what ``tick``
        releases and saves on time; without either, a tick changes nothing."""
        return all(
            not owned.unsnapshotted
            and not owned.switched
            and not self.aligner.held(key)
            and not self.progress.queued(key)
            for key, owned in self.owned.items()
        )

    # ------------------------------------------------------------------------------------------
    def on_records(self, records: Mapping[tuple[str, int], Sequence[RawRecord]], caught_up: CaughtUp) -> Effects:
        """Decode, de-duplicate and align one fetch, run the engines it unblocks, snapshot what is due."""
        effects = Effects()
        touched: set[str] = set()
        for (topic, partition), batch in records.items():
            name = self._catalogue.get(topic)
            if name is None or not batch:
                continue
            self._last_delivery[(name, partition)] = self.stall_clock()
            self._read_to[(name, partition)] = max(self._read_to.get((name, partition), -1), batch[-1].offset)
            self.metrics.records_in.labels(name).inc(len(batch))
            decoded = decode_partition(self.serde, name, topic, partition, batch, self.book_decoder, self.trade_columns)
            for dead in decoded.dead:
                effects.outputs.append(self.encoder.dead_letter(dead))
                effects.ack(topic, partition, [dead.offset])
            if decoded.dead:
                self.metrics.dead_letters.labels(DLQ_MD, "engine:decode").inc(len(decoded.dead))
            for key, rows in decoded.trades.items():
                owned = self._owned(key, partition)
                fresh = rows.offsets > owned.seen.get(name, -1)
                if not fresh.all():
                    self._skip(owned, topic, name, rows.offsets[~fresh].tolist(), effects)
                    rows = rows.take(fresh)
                if len(rows):
                    owned.seen[name] = int(rows.offsets[-1])
                    self.aligner.add_trades(key, rows)
                    touched.add(key)
            for key, items in decoded.events.items():
                owned = self._owned(key, partition)
                last = owned.seen.get(name, -1)
                fresh_items = [item for item in items if item[0] > last]
                if len(fresh_items) < len(items):
                    self._skip(owned, topic, name, [o for o, _ in items if o <= last], effects)
                if fresh_items:
                    owned.seen[name] = fresh_items[-1][0]
                    self.aligner.add_events(key, name, fresh_items)
                    touched.add(key)
        for (topic, partition), batch in records.items():
            if topic == self.progress_topic and batch:
                touched.update(self._read_markers(topic, partition, batch, effects))
        # a topic catching up can unblock keys that received nothing in this fetch
        for key in self.owned:
            if key in touched or self.aligner.held(key):
                self._release(key, caught_up, effects, force=False)
        self._snapshot_due(effects, force=False)
        self.metrics.held.set(self.held())
        return effects

    def stall_clock(self) -> float:
        """Monotonic time without the time spent handling fetches: how long a partition has really been
        silent. The worker handles one fetch before it asks for the next, so while it works through a
        large one (a new group catching up on hours of md.*, on a loaded machine) no partition can
        deliver; counted as silence, that made a partition whose next records were simply not fetched
        yet look stalled, and its keys were force-released out of event-time order (the parity test,
        2026-11-23: md.mark of SOLUSDT "10 s behind", funding points differed for an hour)."""
        since = self._handling_since
        return (self.monotonic() if since is None else since) - self._busy_s

    @contextmanager
    def handling(self) -> Iterator[None]:
        """Around the handling of one fetch (decode, engines, outputs): the stall clock stands still."""
        self._handling_since = self.monotonic()
        try:
            yield
        finally:
            self._busy_s += self.monotonic() - self._handling_since
            self._handling_since = None

    def tick(self, caught_up: CaughtUp) -> Effects:
        """Timer: release inputs held back by partitions that stopped delivering, write due snapshots.

        A partition that is not caught up but has delivered nothing for ``max_hold_s`` (a high
        watermark that counts records nobody can read, a stuck fetch) would otherwise hold its keys
        forever; their inputs are then released as they are, and the event is counted."""
        effects = Effects()
        now = self.stall_clock()
        for key, owned in self.owned.items():
            if self.progress.marked(key):
                if self.progress.queued(key):
                    self._release(key, caught_up, effects, force=False)  # markers left from the last step
                if not self.aligner.held(key):
                    continue
                if not self.progress.timed_out(key):
                    continue  # its source's markers decide; forced release would break their order
                else:
                    self.metrics.progress_timeouts.inc()
                    log.warning(
                        "no progress marker for %s in %.0f s: its source went quiet; releasing its "
                        "inputs by the caught-up rule",
                        key,
                        self.progress.timeout_s,
                    )
            if not self.aligner.held(key):
                continue
            self._release(key, caught_up, effects, force=False)
            if not self.aligner.held(key) or owned.holding_since is None:
                continue
            blocking = [name for name in INPUT_TOPICS if not caught_up(self.prefix + name, owned.partition)]
            stalled = all(
                now - self._last_delivery.get((name, owned.partition), owned.holding_since) >= self.max_hold_s
                for name in blocking
            )
            if now - owned.holding_since >= self.max_hold_s and stalled:
                self.metrics.forced_releases.inc()
                log.warning(
                    "forced release of %s (partition %d): %d inputs held %.0f s behind %s",
                    key,
                    owned.partition,
                    self.aligner.held(key),
                    now - owned.holding_since,
                    blocking,
                )
                self._release(key, caught_up, effects, force=True)
        self._snapshot_due(effects, force=False)
        self.metrics.held.set(self.held())
        return effects

    def flush(self) -> Effects:
        """Snapshot every key with unsaved input (before a rebalance commit or at shutdown)."""
        effects = Effects()
        self._snapshot_due(effects, force=True)
        return effects

    def checkpoint(self) -> Effects:
        """``flush`` without its log line, for the transaction boundary of ``exactly_once``: before each
        commit every key with unsaved input is snapshotted and its inputs acknowledged, so what the
        transaction holds (outputs, snapshots, offsets) is one consistent cut. Otherwise a transaction
        could commit outputs of inputs that its offsets and snapshots do not contain yet, and a
        restart would write them a second time."""
        effects = Effects()
        self._snapshot_due(effects, force=True, quiet=True)
        return effects

    def forget_all(self) -> None:
        """Drop every engine and held input (partitions revoked; the table has their state)."""
        for key in self.owned:
            self.aligner.drop(key)
        self.owned.clear()
        self.progress.forget()
        self._read_to.clear()
        self.metrics.symbols.set(0)

    # ------------------------------------------------------------------------------------------
    def _owned(self, key: str, partition: int) -> _Owned:
        owned = self.owned.get(key)
        if owned is None:
            blob = self.load_snapshot(key)
            if blob is None:
                engine = KeyedEngine.new(key, self.strategies, self.params)
            else:
                engine = KeyedEngine.restore(blob, self.strategies, self.params)
                self.metrics.restores.inc()
                log.info(
                    "restored %s (partition %d) at clock %s, offsets %s",
                    key,
                    partition,
                    engine.engine.clock_ms,
                    engine.applied,
                )
            owned = self.owned[key] = _Owned(
                engine, partition, dict(engine.applied), dict(engine.applied), last_snapshot=self.monotonic()
            )
            self.progress.restored(key, engine.progress_finished)
            self.metrics.symbols.set(len(self.owned))
        return owned

    def _skip(self, owned: _Owned, topic: str, name: str, offsets: list[int], effects: Effects) -> None:
        self.metrics.duplicates.labels(name).inc(len(offsets))
        durable = owned.durable.get(name, -1)
        effects.ack(topic, owned.partition, [o for o in offsets if o <= durable])
        # offsets in (durable, applied] were listed in ``unsnapshotted`` when first released and are
        # acknowledged with the next snapshot; those above ``applied`` are still held in the aligner

    def _read_markers(self, topic: str, partition: int, batch: Sequence[RawRecord], effects: Effects) -> set[str]:
        """Queue the markers of one md.progress batch; returns their keys. A marker already applied (a
        redelivery) is skipped like any input; the others are acknowledged once applied and snapshotted."""
        keys = set()
        for record in batch:
            try:
                key, marker = marker_from_record(self.serde.decode(record.value), record.offset)
            except Exception as exc:  # noqa: BLE001 - an unreadable marker is dropped, loudly
                log.error("unreadable progress marker at %s[%d]@%d: %s", topic, partition, record.offset, exc)
                effects.ack(topic, partition, [record.offset])
                continue
            owned = self._owned(key, partition)
            if record.offset <= owned.seen.get(PROGRESS_TOPIC, -1):
                self._skip(owned, topic, PROGRESS_TOPIC, [record.offset], effects)
                continue
            owned.seen[PROGRESS_TOPIC] = record.offset
            self.progress.add(key, marker)
            keys.add(key)
        self.metrics.records_in.labels(PROGRESS_TOPIC).inc(len(batch))
        return keys

    def _covered(self, marker: Marker, partition: int) -> bool:
        for name, bound in marker.bounds.items():
            if self._read_to.get((name, partition), -1) >= bound:
                continue
            start = self.start_offset(self.prefix + name, partition)
            if start is None or start <= bound:
                return False
        return True

    def _release(self, key: str, caught_up: CaughtUp, effects: Effects, force: bool) -> None:
        owned = self.owned[key]
        if not force and self.progress.marked(key):
            # marker by marker, each as one step of the engine: the same steps at any speed
            for _ in range(MARKERS_PER_STEP):
                marker = self.progress.next_covered(key, lambda m: self._covered(m, owned.partition))
                if marker is None:
                    return
                self.metrics.progress_markers.inc()
                watermark = EVERYTHING if marker.final else marker.watermark
                released = self.aligner.release(key, watermark, marker.bounds)
                released.offsets[PROGRESS_TOPIC] = [marker.offset]  # acknowledged with the snapshot
                owned.engine.progress_finished = marker.final
                self._process(key, owned, released, effects)
                if not self.progress.marked(key):  # its source's final marker: the unmarked rule from here
                    break
            else:
                return  # the rest of the key's markers on the next fetch or tick
        if force:
            watermark = EVERYTHING
        else:
            partition = owned.partition
            watermark = self.aligner.watermark(key, lambda name: caught_up(self.prefix + name, partition))
        self._process(key, owned, self.aligner.release(key, watermark), effects)

    def _follow(self, key: str, owned: _Owned, effects: Effects) -> None:
        records = self.rollouts.schedule(owned.engine.engine, key, owned.partition)
        if records:
            effects.outputs.extend(records)
            owned.switched = True  # the schedule commits with the records that announce it

    def _process(self, key: str, owned: _Owned, released: Released, effects: Effects) -> None:
        now = self.stall_clock()
        if self.rollouts.ready and self.rollouts.states and any(released.offsets.values()):
            # Only with input to apply: the switch's config.applied record and snapshot then share a
            # transaction with acknowledged input offsets. Faust commits only the transactions of
            # partitions whose offsets advance, so a switch chosen for an idle symbol would stay in
            # an open transaction, holding config.applied's last stable offset (every read-committed
            # follower stops there) until that symbol's next input. Nothing is lost by waiting: a
            # symbol's evaluations are made only when input moves its clock.
            self._follow(key, owned, effects)
        if released or released.offsets:
            out = owned.engine.process(
                released.trades.batch() if released.trades is not None else None, released.events, released.offsets
            )
            for name, offsets in released.offsets.items():
                owned.unsnapshotted.setdefault(name, []).extend(offsets)
            if out.bars or out.features or out.signals:
                records, published = self.encoder.encode(out, owned.partition)
                effects.outputs.extend(records)
                if len(published) < len(out.signals):
                    self.metrics.signals_suppressed.inc(len(out.signals) - len(published))
                self.metrics.observe_output(out, self.wall_clock_ms(), published)
        if self.aligner.held(key):
            if released or owned.holding_since is None:
                owned.holding_since = now
        else:
            owned.holding_since = None

    def _snapshot_due(self, effects: Effects, force: bool, quiet: bool = False) -> None:
        now = self.monotonic()
        for key, owned in self.owned.items():
            if not owned.unsnapshotted and not owned.switched:
                continue
            if not force and now - owned.last_snapshot < self.snapshot_interval_s:
                continue
            began = time.perf_counter()
            blob = owned.engine.snapshot()
            self.metrics.snapshot_seconds.observe(time.perf_counter() - began)
            self.metrics.snapshot_bytes.labels(key).set(len(blob))
            self.metrics.snapshots.inc()
            effects.snapshots.append((owned.partition, key, blob))
            if force and not quiet:
                log.info(
                    "saved %s (partition %d) at clock %s, offsets %s",
                    key,
                    owned.partition,
                    owned.engine.engine.clock_ms,
                    owned.engine.applied,
                )
            for name, offsets in owned.unsnapshotted.items():
                effects.ack(self.prefix + name, owned.partition, offsets)
            owned.unsnapshotted = {}
            owned.switched = False
            owned.durable = dict(owned.engine.applied)
            owned.last_snapshot = now
            for state in owned.engine.engine.states.values():
                for counter, value in vars(state.counters).items():
                    self.metrics.state_counters.labels(key, counter).set(value)
