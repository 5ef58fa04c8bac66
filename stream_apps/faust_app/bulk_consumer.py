"""A Faust consumer that hands whole fetches of the ``md.*`` partitions to one batch handler.

Why: stock Faust turns every Kafka record into an event that crosses a queue, a stream, its
processors and an ack, and its fetch loop waits on ``asyncio.wait`` twice per record: through
``stream.noack_take`` stock Faust delivers two orders of magnitude fewer records per second than
aiokafka reads from the same broker (benchmarks/bench_engine_app.py ``--mode stream``; figures in
benchmarks/RESULTS.md). ``take()`` batches what the agent sees, not that per-record machinery.

What this keeps from Faust: group membership and its co-partitioning assignor (a symbol's partition
of every ``md.*`` topic and of the state table's changelog go to the same worker), table recovery
from the changelog (read to ends asked of the broker: ``ShortWaitConsumerThread._highwaters``), offset commits (at-least-once, or transactions with ``exactly_once``), flow
control during rebalances, the producer. What it replaces: only the delivery of records of the
*bulk topics* (the engine inputs), which skip events and streams and arrive as
``{TP: [ConsumerRecord, ...]}`` per fetch. Every other partition (table changelogs during recovery,
the assignor's leader topic) goes through Faust's normal per-record path unchanged.

Acknowledgement stays Faust's: ``ack_offsets`` does in bulk what ``Consumer.ack`` does per message
(the same ``_acked`` bookkeeping under the same lock), so Faust's commit logic (consecutive acked
offsets, producer flush before commit, transactions) is untouched. Before a rebalance or shutdown
commits, ``wait_empty`` first lets the handler flush (snapshot state, ack what it covers).

This module is the one place of the engine that leans on faust-streaming and aiokafka internals
(``_drain_messages``, ``_wait_next_records``, ``_acked``, the consumer thread's worker consumer, the
table manager's start; a test keeps other modules to their public API): `TESTED_RELEASES` names the releases it was read
against and tested with, and the engine refuses to start on others (`check_tested_releases`). The
integration tests (restart, redelivery, rebalance; exactly-once against Kafka) exercise every path here.
"""

from __future__ import annotations

import asyncio
import os
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol, cast

import structlog
from aiokafka.structs import TopicPartition
from faust.tables.manager import TableManager
from faust.transport.consumer import ensure_TP
from faust.transport.drivers import aiokafka as aiokafka_driver
from faust.types import TP
from faust.types.tuples import ack_lock
from mode.utils.futures import notify

from tapeflow_runtime.errors import TapeflowError

log = structlog.get_logger("engine")

#: the releases of the libraries whose private methods this module overrides, as read and tested;
#: another release may have renamed or changed them, and exactly-once depends on them
TESTED_RELEASES = {"faust-streaming": ("0.15.3",), "aiokafka": ("0.14.0",)}
#: set to run anyway on releases not in `TESTED_RELEASES` (the engine logs that it does)
UNTESTED_ENV = "TAPEFLOW_ENGINE_UNTESTED_LIBRARIES"


class UntestedLibraries(TapeflowError):
    """The installed faust-streaming or aiokafka is not a release this module was tested with."""


def check_tested_releases(installed: Mapping[str, str] | None = None, environ: Mapping[str, str] | None = None) -> None:
    """Raise `UntestedLibraries` naming each library whose installed release is not in `TESTED_RELEASES`
    (``installed``: name -> version, default the environment's), unless `UNTESTED_ENV` is set."""
    from importlib.metadata import version

    found = dict(installed) if installed is not None else {name: version(name) for name in TESTED_RELEASES}
    untested = {name: v for name, v in found.items() if v not in TESTED_RELEASES[name]}
    if not untested:
        return
    said = ", ".join(f"{name} {v} (tested: {' '.join(TESTED_RELEASES[name])})" for name, v in sorted(untested.items()))
    if (environ if environ is not None else os.environ).get(UNTESTED_ENV):
        log.warning("engine running on untested library releases", untested=said)
        return
    raise UntestedLibraries(
        f"the engine overrides private methods of these libraries and was not tested with "
        f"the installed releases: {said}; install the tested ones (pip install -e . does), "
        f"or set {UNTESTED_ENV}=1 to run anyway"
    )


class BulkHandler(Protocol):
    async def on_records(self, records: Mapping[TP, Sequence[Any]], generation: int) -> None: ...

    async def flush(self) -> None: ...

    def transaction_boundary(self) -> AbstractAsyncContextManager[None]: ...


class BulkConsumer(aiokafka_driver.Consumer):
    """aiokafka-driven Faust consumer with bulk delivery for ``bulk_topics`` (set before start)."""

    bulk_topics: frozenset[str] = frozenset()
    bulk_handler: BulkHandler | None = None
    fetch_max_wait_ms: int = 20

    def _new_consumer_thread(self) -> Any:
        return ShortWaitConsumerThread(self, loop=self.loop, beacon=self.beacon)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._next_offset: dict[TP, int] = {}  # tp -> offset after the last record delivered
        # tp -> offset after the last record taken from a fetch that the handler has not taken over yet
        # (``hand_over``): those records are in no aligner, so they must not count as read
        self._fetched_next: dict[TP, int] = {}
        self._start_offset: dict[TP, int] = {}  # tp -> where reading (re)started at the last seek
        # which partitions had records taken from aiokafka while a seek to the committed offsets ran
        # (``perform_seek``): tp -> number of the last take, counted by ``_takes``
        self._taken_at: dict[TP, int] = {}
        self._takes = 0
        super().__init__(*args, **kwargs)

    # -- what the handler may ask -------------------------------------------------------------
    def ack_offsets(self, tp: TP, offsets: Sequence[int]) -> None:
        """``Consumer.ack`` for many offsets of one partition at once (same bookkeeping, one lock)."""
        if not offsets:
            return
        with ack_lock:
            committed = self._committed_offset[tp]
            index = self._acked_index[tp]
            # a set: one offset listed twice would sit twice in ``_acked`` and stall Faust's commit
            # (it commits the first run of consecutive offsets, and a repeat ends the run)
            fresh = sorted({o for o in offsets if (committed is None or o >= committed) and o not in index})
            if fresh:
                index.update(fresh)
                self._acked[tp].extend(fresh)
                self._n_acked += len(fresh)
        notify(self._waiting_for_ack)

    def _new_offset(self, tp: TP) -> int | None:
        """Faust's next commit offset of ``tp`` (``Consumer._new_offset``), with acked offsets counted once.

        Faust adds a gap's offsets to the acked list without looking at what is there: an offset
        recorded as a gap and then delivered and acked anyway (a fetch that started past the head, then
        the head) sits in the list twice, each commit then takes only the first run of consecutive
        offsets up to the repeat, and the group's commit crawls forward one offset per commit while
        every record has been processed. Hand-written because the fix is inside Faust's method."""
        acked = self._acked[tp]
        offset, rest = next_commit(acked, self._gap[tp], self._committed_offset[tp])
        if offset is not None:
            done = set(acked) - set(rest)
            acked[:] = rest
            self._acked_index[tp].difference_update(done)
        else:
            acked[:] = rest
        return offset

    def hand_over(self, tps: Iterable[TP]) -> None:
        """The handler took over the records of ``tps`` from the fetch it was given: they count as read.

        Until then ``caught_up`` does not count them. Between taking a fetch from aiokafka and the
        handler's lock there are awaits (gaps recorded, other topics' records delivered one by one, the
        first read of the config topics), and the engine's timer tick runs in them: counting the fetch's
        records as read there made a partition look caught up while its records were in no aligner, the
        tick released another topic's younger inputs, and the trades that followed were late (a CI run:
        2,200 of a restarted worker's 2,400 trades per symbol dropped as late while the config-topic read
        was being waited for)."""
        for tp in tps:
            offset = self._fetched_next.pop(tp, None)
            if offset is not None:
                self._next_offset[tp] = offset

    def caught_up(self, tp: TP) -> bool:
        """True when every record below the high watermark of ``tp``'s last fetch has been handed to
        the handler (``hand_over``).

        Deliberately not the fetch position: the fetcher thread may hold records it has fetched
        but not yet delivered, and calling those "read" would release younger inputs first."""
        highwater = self.highwater(tp)
        if highwater is None:
            return False
        next_offset = self.read_position(tp)
        return next_offset is not None and next_offset >= highwater

    def start_offset(self, tp: TP) -> int | None:
        """Where reading of ``tp`` (re)started at the last seek, if known."""
        return self._start_offset.get(tp)

    async def resolve_start_offsets(self, tps: Sequence[TP]) -> None:
        """Partitions that restarted without a committed offset start at their log start."""
        missing = [
            tp
            for tp in tps
            if tp not in self._next_offset and tp not in self._fetched_next and tp not in self._start_offset
        ]
        if missing:
            earliest = await self.earliest_offsets(*missing)
            for tp, offset in earliest.items():
                if offset is not None:
                    self._start_offset.setdefault(tp, offset)

    async def perform_seek(self) -> None:
        """Faust's ``perform_seek`` (every partition to its committed offset, read from there), except
        that a partition whose records were taken while the seek ran keeps what was read of it.

        The seek is one OffsetFetch round trip per partition in the consumer thread (aiokafka's
        ``seek_to_committed``), and at the end of a table recovery Faust resumes the input partitions
        before it seeks: the fetch loop keeps taking fetches meanwhile. Records of a partition the thread
        has already sought, taken and handed to the handler before the seek returns, are read: aiokafka's
        position is past them and it will not deliver them again. Faust set every read offset to the
        committed one when the seek returned, and ``seek_to_committed`` forgot what had been handed
        over: such a partition then counted as read only up to its committed offset for good (never
        ``caught_up``; a fresh clone's rebalance test: every md.indicators partition read to its end in
        the seek's 0.1 s, lag 6-12 each, 4,674 inputs held until the test's deadline), and its next
        record would have recorded the records in between as a gap (acknowledged before any snapshot
        held them). A partition taken before the thread sought it is read again from the committed
        offset; its read offset then drops the records already delivered (the handler has them)."""
        since = self._takes
        committed = await self.seek_to_committed()
        self._read_offset.update(
            {
                tp: offset if offset is not None and offset >= 0 else None
                for tp, offset in committed.items()
                if self._taken_at.get(tp, 0) <= since
            }
        )
        self._committed_offset.update(
            {ensure_TP(tp): offset if offset else None for tp, offset in committed.items() if offset is not None}
        )

    async def seek_to_committed(self) -> Mapping[TP, int]:
        """Seek to the committed offsets (`perform_seek`), each partition committed at 0 to 0 as well.

        What was handed over (``_next_offset``, ``_fetched_next``) stays read: the handler holds those
        records (it skips them if they come again), and the fetch loop may have taken a partition's
        records after the thread sought it, which aiokafka will not deliver again. Everything is
        forgotten when the handler is (``wait_empty``, before every rebalance's commit)."""
        committed = await super().seek_to_committed()
        # aiokafka seeks only to offsets > 0 and leaves a partition committed at 0 wherever its reset
        # puts it: a group primed at 0 (``priming``: a partition empty when primed) whose partition
        # has records by the time it joins could read them from wherever the reset pointed, and a
        # later seek to 0 makes Faust record the skipped head as a gap (its commit then advances one
        # offset per commit). Seeking those partitions to 0 explicitly makes "committed 0" mean
        # "from the start".
        for tp, offset in committed.items():
            if offset == 0:
                await self.seek(tp, 0)
        self._start_offset = {tp: offset for tp, offset in committed.items() if offset and offset > 0}
        return committed

    def read_position(self, tp: TP) -> int | None:
        """The offset after the last record delivered (where reading restarted, before the first)."""
        return self._next_offset.get(tp, self._start_offset.get(tp))

    def lag(self, tp: TP) -> int | None:
        highwater = self.highwater(tp)
        next_offset = self.read_position(tp)
        if highwater is None or next_offset is None:
            return None
        return max(highwater - next_offset, 0)

    # -- Faust hooks -----------------------------------------------------------------------------
    async def force_commit(self, topics: Any = None, start_new_transaction: bool = True) -> bool:
        """Faust's commit; with ``exactly_once`` inside the handler's transaction boundary: no effects
        are performed while the transactions commit, and every output sent before is covered by the
        snapshots and acknowledged offsets the same transaction commits (``EngineWorker``).
        Every commit comes through here: the timer's (``commit_interval_s``, one transaction per input
        partition per interval, not per record), the rebalance's and the stop's."""
        handler = self.bulk_handler
        if handler is None or not self.in_transaction:
            return await super().force_commit(topics, start_new_transaction=start_new_transaction)
        async with handler.transaction_boundary():
            return await super().force_commit(topics, start_new_transaction=start_new_transaction)

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        await super().on_partitions_revoked(revoked)
        if self.in_transaction and revoked:
            await self._abort_open_transactions(revoked)

    async def _abort_open_transactions(self, revoked: set[TP]) -> None:
        """Abort the open transactions of revoked partitions, after Faust's revocation has run.

        faust-streaming 0.15.3 drops the acknowledged offsets of revoked partitions before its
        revocation commit, so that commit covers none of them and their transactions stay open, holding
        outputs of inputs whose offsets were never committed. When the same worker gets the partitions
        back (a pause past the group session; any eager rebalance that leaves it its partitions) Faust
        keeps those producers and their open transactions ("Invalid state transition IN_TRANSACTION ->
        IN_TRANSACTION" at its begin), the worker reads the inputs again from the committed offsets, and
        the next commit made both copies of their outputs visible (duplicate feature ids, seen after a
        SIGSTOP). Aborted here, the inputs' outputs exist once: from the re-read. A partition that moves
        to another worker loses nothing either: the new owner's producer would have aborted them."""
        transactions = self.transactions
        producer = transactions.producer
        for tid in sorted(transactions._tps_to_transactional_ids(revoked)):
            txn = producer._transaction_producers.get(tid)
            manager = getattr(txn, "_txn_manager", None)
            if manager is None or not manager.is_in_transaction():
                continue
            try:
                await producer.abort_transaction(tid)
            except Exception as exc:  # noqa: BLE001 - a producer that cannot abort is fenced or failed:
                # its transaction times out on the broker, and the next owner's producer fences it
                log.warning("open transaction of revoked partitions not aborted", transactional_id=tid, error=repr(exc))
            else:
                log.info("open transaction of revoked partitions aborted", transactional_id=tid)

    async def wait_empty(self) -> None:
        # runs before every rebalance commit and at shutdown: let the handler persist what it
        # holds so the commit that follows covers it; records it still holds stay uncommitted
        if self.bulk_handler is not None:
            await self.bulk_handler.flush()
        self._next_offset.clear()
        self._fetched_next.clear()
        self._start_offset.clear()
        self._taken_at.clear()
        await super().wait_empty()

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - exercised end to end
        if self.bulk_handler is None:
            return await super()._drain_messages(fetcher)
        callback = self.callback
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        bulk_topics = self.bulk_topics
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                records, active = await self._wait_next_records(1.0)
                generation = self.app.consumer_generation_id  # as Faust's getmany: after the fetch
                await asyncio.sleep(0)
                if records is None or self.should_stop:
                    continue
                if not self.flow_active:
                    await self._seek_while_paused()
                    continue
                await self._deliver_fetch(records, active, generation, callback, bulk_topics)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                return
            raise

    async def _seek_while_paused(self) -> None:  # pragma: no cover - exercised end to end
        """A rebalance began while fetching: like Faust's getmany, drop the fetch and re-seek, and like it
        survive a seek that loses the race with the revocation (aiokafka: IllegalStateError "No current
        assignment"); unguarded, it crashed the worker in the rebalance test. The new assignment seeks
        afresh."""
        try:
            await self.perform_seek()
        except Exception as exc:  # noqa: BLE001 - Faust's own getmany does the same
            log.warning("seek while the flow is paused failed", error=repr(exc))

    async def _deliver_fetch(
        self,
        records: Mapping[TP, list[Any]],
        active: Any,
        generation: int,
        callback: Callable[[Any], Awaitable[None]],
        bulk_topics: frozenset[str],
    ) -> None:  # pragma: no cover - exercised end to end
        """One fetch's records: the bulk topics' (new ones only, gaps recorded) to the handler in one call,
        every other partition's one by one through Faust; nothing more once the assignment changes."""
        bulk: dict[TP, list[Any]] = {}
        for tp, batch in records.items():
            if self.app.consumer_generation_id != generation or not self.flow_active:
                break  # assignment changed under us; the new one seeks afresh
            if not batch or (active is not None and tp not in active and tp not in self._buffered_partitions):
                continue
            if tp.topic in bulk_topics:
                kept = await self._track_offsets(tp, batch)
                if kept:
                    bulk[tp] = kept
            else:
                await self._deliver_one_by_one(callback, tp, batch)
        if bulk and self.app.consumer_generation_id == generation and self.flow_active:
            await cast(BulkHandler, self.bulk_handler).on_records(bulk, generation)

    async def _track_offsets(self, tp: TP, batch: list[Any]) -> list[Any]:
        """Drop records already read (a re-fetch), record gaps (compaction, control records).

        ``Consumer._add_gap`` includes its upper bound, so a gap ends one below the next record
        (that record is acknowledged by the handler; counted twice it would stall the commit)."""
        read = self._read_offset[tp]
        if read is not None:
            if batch[0].offset < read:
                batch = [r for r in batch if r.offset >= read]
                if not batch:
                    return batch
            if batch[0].offset > read + 1 and self.app.topics.acks_enabled_for(tp.topic):
                await self._add_gap(tp, read + 1, batch[0].offset - 1)
        previous = batch[-1].offset
        # a partition's offsets only increase, so no gap inside when first and last are len - 1 apart
        # (the common case: skips a Python step per record)
        if previous - batch[0].offset != len(batch) - 1:
            previous = batch[0].offset
            for record in batch[1:]:
                if record.offset > previous + 1:
                    await self._add_gap(tp, previous + 1, record.offset - 1)
                previous = record.offset
        self._read_offset[tp] = previous
        self._fetched_next[tp] = previous + 1  # read once the handler takes it over (``hand_over``)
        self._takes += 1
        self._taken_at[tp] = self._takes  # a seek running now keeps this read offset (``perform_seek``)
        return batch

    async def _deliver_one_by_one(self, callback: Callable[[Any], Awaitable[None]], tp: TP, batch: list[Any]) -> None:
        get_read_offset = self._read_offset.__getitem__
        for record in batch:
            read = get_read_offset(tp)
            if read is not None and record.offset < read:
                continue
            if read is not None and record.offset > read + 1 and self.app.topics.acks_enabled_for(tp.topic):
                await self._add_gap(tp, read + 1, record.offset)
            await self.wait_first(callback(self._to_message(tp, record)), self.suspend_flow.wait())
            self._read_offset[tp] = record.offset


def next_commit(acked: Sequence[int], gap: Any, committed: int | None) -> tuple[int | None, list[int]]:
    """(the offset to commit or None, the acked offsets left) for a partition: the gap intervals up to
    the highest acked offset count as acked (and are chopped off ``gap``, an ``IntervalTree``), every
    offset once; the commit is the end of the first run of consecutive offsets, unless the run starts
    more than one past ``committed`` (a head not processed yet: no commit)."""
    if not acked:
        return None, list(acked)
    offsets = set(acked)
    if gap:
        max_offset = max(offsets)
        filled = [
            o for iv in sorted(gap.overlap(0, max_offset), key=lambda iv: iv.begin) for o in range(iv.begin, iv.end)
        ]
        if filled:
            gap.chop(0, max(filled[-1], max_offset + 1))
            offsets.update(filled)
    ordered = sorted(offsets)
    if committed and ordered[0] - committed > 1:
        return None, ordered
    end = 1
    while end < len(ordered) and ordered[end] == ordered[end - 1] + 1:
        end += 1
    return ordered[end - 1] + 1, ordered[end:]


class ShortWaitConsumerThread(aiokafka_driver.AIOKafkaConsumerThread):
    """Faust hard-codes ``fetch_max_wait_ms=1500``. aiokafka keeps one fetch in flight per broker and
    leaves out partitions whose records are still buffered, so while a fetch for the quiet partitions
    (``md.mark`` once a second, ``md.indicators`` every few minutes) waits for data, the busy
    ``md.trades`` partitions wait behind it, up to the whole wait added to a trade's latency. A short
    wait bounds that delay; the cost is more (empty) fetch round trips on loopback.
    It also makes the worker read committed records only, whatever the processing guarantee, and
    hands the bulk topics' records over as aiokafka decoded them (`RawBulkRecords`)."""

    async def on_start(self) -> None:
        await super().on_start()
        fetcher = self._ensure_consumer()._fetcher
        fetcher._records = RawBulkRecords(lambda: self.consumer.bulk_topics, fetcher._records)

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = self.consumer.fetch_max_wait_ms  # read by aiokafka at start
        # Faust reads committed only with ``exactly_once``; the worker always does (its changelog may
        # hold a transactional worker's aborted snapshots, and a read_committed consumer of
        # non-transactional records reads the same records: their last stable offset is the end)
        consumer._isolation_level = "read_committed"
        return consumer

    async def _highwaters(self, partitions: list[TP]) -> Mapping[TP, int]:
        """The ends Faust's table recovery reads the changelog to, asked of the broker every time.

        With ``exactly_once`` faust-streaming 0.15.3 answers ``last_stable_offset`` here: aiokafka's
        value cached from the last fetch response of the partition, None for a partition this process
        has not fetched yet. A restarted worker builds its recovery ends before its first changelog
        fetch, so it often got None ("highwater -1"), concluded that nothing needed recovering and
        processed its inputs from the committed offsets with empty state (the SIGKILL test: the third
        restart started BTCUSDT and ETHUSDT afresh in the middle of the replay and wrote a bar of 140
        trades instead of 314). ``end_offsets`` sends ListOffsets with the consumer's isolation level,
        read_committed: the last stable offset, fresh. Faust builds these ends after the worker's
        transactional producers have started (and aborted the previous owner's open transactions), so
        it is the end of everything committed, which is what the committed input offsets correspond to."""
        return cast(Mapping[TP, int], await self._ensure_consumer().end_offsets(partitions))


def _as_decoded(tp: Any, record: Any) -> Any:
    return record


class RawBulkRecords(OrderedDict):  # type: ignore[type-arg]
    """aiokafka's buffer of fetched partitions (``Fetcher._records``, tp -> ``FetchResult``) that makes
    the bulk topics' records come out as aiokafka's own decoded records (offset, timestamp, key,
    value, headers), not as a ``ConsumerRecord`` dataclass built for each: that construction was ~1 µs
    a record, the largest per-record cost of the worker's fetch path after the Avro decode (about a
    fifth of its CPU at 250 k trades/s). The bulk handler reads only ``offset``, ``key`` and
    ``value``, which both kinds have; every other topic's records stay ``ConsumerRecord`` for Faust.
    Aborted transactions and control batches are still skipped by aiokafka's own iteration: only its
    last step, the per-record wrapper, is replaced."""

    def __init__(self, bulk_topics: Callable[[], frozenset[str]], existing: Mapping[Any, Any]) -> None:
        super().__init__(existing)
        self._bulk_topics = bulk_topics

    def __setitem__(self, tp: Any, result: Any) -> None:
        records = getattr(result, "_partition_records", None)
        if records is not None and tp.topic in self._bulk_topics():
            records._consumer_record = _as_decoded  # looked up per record, before the class's method
        super().__setitem__(tp, result)


class OffsetsAsAiokafkaProducer(aiokafka_driver.Producer):
    """Faust's producer, its transactional commit fixed: faust-streaming 0.15.3 hands aiokafka's
    ``send_offsets_to_transaction`` offsets keyed by Faust's ``TP``, and aiokafka (0.14) accepts only
    its own ``TopicPartition`` there (``TypeError: Key should be TopicPartition instance``), so every
    ``exactly_once`` commit failed and the worker crashed at its first one."""

    async def commit_transactions(
        self, tid_to_offset_map: Mapping[str, Mapping[TP, int]], group_id: str, start_new_transaction: bool = True
    ) -> None:
        offsets = {
            tid: {TopicPartition(tp.topic, tp.partition): offset for tp, offset in by_tp.items()}
            for tid, by_tp in tid_to_offset_map.items()
        }
        await super().commit_transactions(offsets, group_id, start_new_transaction)

    def _settings_extra(self) -> Mapping[str, Any]:
        """Transactions as long as the consumer's max poll interval (the worker's 300 s), not aiokafka's
        60 s: the worker commits between fetches, and a catch-up fetch on a loaded machine took more
        than 60 s (the SIGKILL test under a load of 19: the broker aborted the open transaction and
        fenced the worker, which crashed). A fetch slower than the poll interval loses the partitions
        anyway. A broker's ``transaction.max.timeout.ms`` (Kafka's default 15 min) must allow it."""
        settings = dict(super()._settings_extra())
        if self.app.in_transaction:
            settings["transaction_timeout_ms"] = int((self.app.conf.broker_max_poll_interval or 300.0) * 1000)
        return settings


class BulkTransport(aiokafka_driver.Transport):
    Consumer = BulkConsumer
    Producer = OffsetsAsAiokafkaProducer


class PromptTableManager(TableManager):
    """Faust's table manager without the 1 s sleep its ``on_start`` begins with (faust-streaming
    0.15.3, ``faust/tables/manager.py``), which gives an app's module-level tables time to be
    declared. The engine declares its one table before the app starts, so the sleep only delayed
    every start by 1 s."""

    async def on_start(self) -> None:
        if not self.should_stop:
            await self._update_channels()
            await self.recovery.start()
