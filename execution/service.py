"""`tapeflow execute --mode paper|testnet|live`: the executor as a process (Kafka in and out, metrics,
health, restore on start).

Inputs: `signals`, `md.trades`, `md.book` and `md.mark` (funding) through one consumer group
(`tapeflow-executor-<mode>`) with the range assignor, so partition i of all four lands on the same member (they are co-partitioned by
`exchange:symbol`), and `risk.events` through a second, group-less consumer that follows kill-switch
records. Outputs: orders, fills, positions, risk.events through the `Publisher`, transactional by
default (below). Both consumers read committed records only (`isolation.level=read_committed`).

Transactions (`ExecuteOptions.transactional`, default on): the publisher's transactional.id is the
group id (`<prefix>tapeflow-executor-<mode>`), so a restarted executor's `init_transactions` fences
the previous one (a zombie's next produce or commit fails: `TransactionFenced`, it exits 1) and
aborts its open transaction before any state is read; every assignment also commits the assigned
partitions' committed offsets once more, so a zombie that wakes up with nothing to publish learns it
is fenced there instead of holding partitions from its successor. Everything published while a batch of inputs
is processed and the offsets after the inputs handled (not the consumer's position: inputs held for
event-time order are read but not handled yet) commit in one transaction: at the end of the loop
pass that published something, once `transaction_interval_ms` has passed since the last commit (0:
every such pass), and at least every `commit_interval_ms` for the input offsets alone; also before a
rebalance takes partitions away and on stop. A restarted executor therefore restores from outputs
that match its committed input offsets exactly (a committed cut) and re-processes the inputs after
them as the dead run did: a SIGKILL leaves no duplicate and no gap in orders, fills and positions
(tests/execution/test_execution_transactions.py). What the outputs do not hold is taken from the
inputs before the cut: the last `WARM_RECORDS` md.trades/md.book records of each assigned partition
(`Executor.warm_market`: data freshness, last price, book), and paper orders still open at the cut
are put back in the new paper book (`Executor.restore(committed_cut=True)`).
Exchange modes commit the open transaction at the sink's `barrier()` (before an order is sent), so
an order the exchange may have is always in a committed intent; client order ids stay the exchange's
guard against a second order if that commit is lost. An aborted transaction that held outputs (a record not delivered,
the broker refusing the commit) stops the service with exit code 1: the in-memory state includes what
was aborted, and a restart rebuilds it from the committed cut. One that held input offsets only (a
broker that stopped answering during an idle commit) is aborted and the service goes on: nothing of
its state came from it, and the next transaction commits later offsets.

Input order: inputs are processed in event-time order per partition (`execution.input_order`): when
the executor is behind (a restart, a replay already in the broker) a signal is handled before the
trades after its evaluation time, so fills are those of the backtest; live, every topic is at its end
and inputs are handled as they arrive.

State persistence (the design choice): the executor's own output topics are its state. On every
partition assignment it reads `positions` and `orders` (the assigned partitions) and all of
`risk.events` to the end (committed records) and rebuilds open positions, the signals already handled
and the risk guard (`Executor.restore`); no separate state topic or file can disagree with what was
published. Without transactions, input offsets are committed only after the outputs they caused are
acknowledged (`Publisher.flush`), so a crash re-delivers inputs rather than losing them, and
re-delivered signals are recognised as duplicates (their outputs may then be published twice). The
risk guard's counters and the daily guard survive restarts through the compacted `risk.events` (keys
`<mode>:<scope>`).

Exchange modes (`--mode testnet|live`, after the checks of `execution.safety`): one `BinanceBroker` is
connected at start (clock sync, exchange filters, user-data stream), before Kafka is touched, shared by
the executors of successive partition assignments and closed on stop. On every assignment, after the
state is restored (orders the previous run left unfinished are looked up by client id, never re-sent;
the signals of unfinished entries are read back from `signals` for their exit plans), the exchange is
reconciled with that state (`Executor.reconcile`) before any input is consumed, then every
`reconcile.interval_s` (default 5 min). Findings and failures go to risk.events; an exchange that does
not answer blocks new entries (`exchange_down`) until it does and a reconciliation succeeds.

One writer: the guard's limits (daily loss, max open positions) are account-wide, so one executor per
mode is expected. If the group gives this process only some of the signal partitions (a second
executor joined), it keeps managing its positions but blocks new entries (`not_sole_writer`) and
reports itself degraded.

Exit codes: 0 clean stop; 1 failure while running (undeliverable records, an aborted transaction,
fenced by a newer executor, unreadable state); 2 refused
to start (live/testnet safety checks, exchange unreachable at start, bad config, no Kafka).
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from execution.broker import Broker
from execution.config import ExecutorConfig, ExecutorConfigError, load_executor_config
from execution.executor import Executor
from execution.input_order import PAUSE_AT, RESUME_AT, TIME_FIELD, InputAligner
from execution.metrics import ExecutorMetrics
from execution.reconcile import Reconciler
from execution.safety import (
    BrokerUnavailable,
    LiveTradingRefused,
    build_broker,
    check_mode_allowed,
    startup_echo,
)
from schemas.catalogue import dlq_topic
from schemas.catalogue import topic as topic_spec
from schemas.registry import registry_from_url
from schemas.serde import AvroSerde
from tapeflow_runtime.kafka_client import LagProbe, consumer_config, ensure_topics, topic_metadata
from tapeflow_runtime.offsets import CommittedOffsetError, committed_offsets
from tapeflow_runtime.publisher import Publisher, PublishMetrics, TransactionAborted, TransactionFenced
from tapeflow_runtime.service_http import build_app, run_thread_with_endpoint
from tapeflow_runtime.settings import Settings
from tapeflow_runtime.topic_reader import StateReadError, read_to_end

log = structlog.get_logger("executor")

INPUTS = ("signals", "md.trades", "md.book", "md.mark")
#: records read back per md.trades / md.book partition before the committed offsets on assignment
#: (`Executor.warm_market`): a market quieter than that in its partition starts without data, as before
WARM_RECORDS = 5_000
OUTPUTS = ("orders", "fills", "positions", "risk.events")


@dataclass
class ExecuteOptions:
    config_path: Path | None = None  # executor config (YAML/JSON); None = defaults
    metrics_port: int = 0
    metrics_host: str = "127.0.0.1"
    start_from: str = "latest"  # a new consumer group starts at the end of the inputs ("earliest" for tests)
    group_id: str | None = None  # default: <topic_prefix>tapeflow-executor-<mode>
    clock_interval_ms: int = 100  # pause ends, day change, stale data, maker timeouts
    max_hold_s: float = 5.0  # inputs held for event-time order are released after this long without news
    commit_interval_ms: int = 1000  # input offsets are committed at least this often
    transactional: bool = True  # outputs and input offsets in one Kafka transaction (module docstring)
    transaction_interval_ms: int = 0  # a transaction holding outputs commits once this long after the last
    restore_idle_s: float = 0.5
    stop: threading.Event | None = None  # set it to stop the service (tests, embedding)


class KafkaSink:
    """The executor's `OutputSink` on the Kafka publisher; also feeds metrics and echoes the first order."""

    def __init__(
        self, publisher: Publisher, metrics: ExecutorMetrics, mode: str, commit: Callable[[], None] | None = None
    ) -> None:
        """`commit`: the transactional service's commit of its open transaction (the barrier's)."""
        self.publisher = publisher
        self.metrics = metrics
        self.mode = mode
        self.first_order_logged = False
        self.commit = commit

    def emit(self, topic: str, key: str, record: dict[str, Any]) -> None:
        self.publisher.publish(topic, key, record)
        self.metrics.observe_record(topic, record)
        if topic == "orders" and record["state"] == "PENDING_NEW" and not self.first_order_logged:
            self.first_order_logged = True
            log.warning(
                "first order of this run",
                mode=self.mode,
                client_order_id=record["client_order_id"],
                symbol=record["symbol"],
                side=record["side"],
                type=record["type"],
                qty=record["qty"],
                price=record["price"],
                leg=record["leg"],
            )

    def barrier(self) -> None:
        if self.commit is not None:  # committed, not only acknowledged: raises when it was aborted
            self.commit()
            return
        remaining = self.publisher.flush(10)
        if remaining or not self.publisher.healthy:
            # fail closed: an order whose intent is not recorded must not be sent
            raise RuntimeError(f"order intent not durable ({remaining} records undelivered); refusing to send")

    @property
    def healthy(self) -> bool:
        return self.publisher.healthy


class ExecutorService:
    def __init__(
        self,
        settings: Settings,
        mode: str,
        config: ExecutorConfig,
        bootstrap: str,
        serde: AvroSerde,
        options: ExecuteOptions,
        clock: Callable[[], int] | None = None,
        broker: Broker | None = None,
    ) -> None:
        """`broker`: the connected exchange broker of testnet/live (None: a fresh paper broker per assignment)."""
        self.settings = settings
        self.mode = mode
        self.config = config
        self.bootstrap = bootstrap
        self.serde = serde
        self.options = options
        self.clock = clock or (lambda: int(time.time() * 1000))
        self.prefix = settings.topic_prefix
        self.metrics = ExecutorMetrics()
        self._group = options.group_id or f"{self.prefix}tapeflow-executor-{mode}"
        self.transactional = options.transactional
        self.publisher = Publisher(
            bootstrap,
            serde,
            PublishMetrics(self.metrics.registry, prefix="tapeflow_executor_publish"),
            topic_prefix=self.prefix,
            transactional_id=self._group if self.transactional else None,
        )
        self.sink = KafkaSink(
            self.publisher, self.metrics, mode, commit=self._commit_transaction if self.transactional else None
        )
        # transactional: (topic, partition) -> the offset after the last input handled (committed with the outputs)
        self._handled: dict[tuple[str, int], int] = {}
        self._handled_moved = False  # inputs handled since the last commit
        self._last_commit = 0.0  # monotonic time of the last commit
        self.commits = 0  # transactions committed (tests, benchmarks)
        self.executor: Executor | None = None
        self.status = "starting"
        self.restores = 0
        self._names = {self.prefix + name: name for name in INPUTS}
        self.aligner = InputAligner(INPUTS)
        self._holding: dict[int, float] = {}  # partition -> since when its inputs wait for another topic
        self._paused: set[tuple[str, int]] = set()  # (topic, partition) paused for running ahead
        self._reported: dict[int, float] = {}  # partition -> when its holding was last logged
        self._checked: dict[int, tuple[float, bool]] = {}  # partition -> (when, whether it was catching up)
        self._start: dict[tuple[str, int], int] = {}  # topic-partition not read yet -> the offset it starts at
        self._consumer: Consumer | None = None
        self._lag = LagProbe(self.metrics.lag, self._group)
        self._fence_check: list[TopicPartition] | None = None  # an assignment whose producer epoch is unchecked
        self._risk: Consumer | None = None
        self._reconciled_once = False
        self.broker = broker
        self.reconciler = (
            None
            if broker is None
            else Reconciler(
                broker,
                config.reconcile.orphans,
                int(config.reconcile.interval_s * 1000),
                retry_ms=int(config.reconcile.retry_s * 1000),
            )
        )

    @property
    def group_id(self) -> str:
        return self._group

    # --- lifecycle ------------------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:  # noqa: C901 - over the complexity limit, to be split
        if self.transactional:  # fences an older executor and aborts its open transaction: before any state is read
            self.publisher.init_transactions()
            self.publisher.begin_transaction()
            self._last_commit = time.monotonic()
        self._consumer = Consumer(
            consumer_config(
                self.bootstrap,
                self._group,
                **{
                    "enable.auto.offset.store": False,
                    "auto.offset.reset": self.options.start_from,
                    "partition.assignment.strategy": "range",
                    "enable.partition.eof": True,
                    "isolation.level": "read_committed",
                    "fetch.wait.max.ms": self.settings.executor_fetch_wait_ms,
                },
            )
        )
        # risk.events is written a few times a day (a pause, the kill switch): Kafka answers a waiting
        # fetch as soon as a record arrives, so the long wait costs no latency (it only spaces the idle
        # fetches the broker answers), and `consume(timeout=0)` below never blocks on it
        self._risk = Consumer(
            consumer_config(
                self.bootstrap,
                f"{self._group}-risk-follower",
                **{"fetch.wait.max.ms": 5000, "isolation.level": "read_committed"},
            )
        )
        self._consumer.subscribe(
            [self.prefix + name for name in INPUTS], on_assign=self._on_assign, on_revoke=self._on_revoke
        )
        next_clock = next_commit = 0
        failed = False
        try:
            while not stop.is_set():
                # a record ends the wait at once; idle, the loop wakes for the next clock tick only
                wait_s = min(self.options.clock_interval_ms, max(0, next_clock - self.clock())) / 1000
                batch = self._consumer.consume(num_messages=500, timeout=wait_s)
                if self._fence_check is not None:  # after an assignment, before any of its records is handled
                    assigned, self._fence_check = self._fence_check, None
                    self._check_not_fenced(self._consumer, assigned)
                for msg in batch:
                    if msg.error():
                        if msg.error().code() != KafkaError._PARTITION_EOF:
                            log.warning("consume error", error=msg.error().str())
                        else:
                            self.aligner.at_end(self._names[msg.topic()], msg.partition())
                        continue
                    if self.executor is not None:
                        self._hold(msg)
                ex = self.executor
                if ex is None:
                    continue
                self._release(ex)
                for msg in self._risk.consume(num_messages=100, timeout=0):
                    if msg.error():
                        continue
                    try:
                        record = self.serde.decode(msg.value())
                    except Exception as exc:
                        log.warning("undecodable risk.events record ignored", offset=msg.offset(), error=str(exc))
                        continue
                    ex.on_risk_record(record, self.clock())
                now = self.clock()
                if now >= next_clock:
                    next_clock = now + self.options.clock_interval_ms
                    ex.on_clock(now)
                    if self.reconciler is not None and self.reconciler.due(now):
                        self._reconcile(ex, now)
                    self._refresh_gauges(ex, now)
                    if self._lag.due(time.monotonic()):  # the assignment is built only when it is asked
                        self._lag.maybe_refresh(self._consumer, self._consumer.assignment(), time.monotonic())
                self.publisher.poll(0)
                if now >= next_commit or (
                    self.transactional
                    and self.publisher.transaction_records
                    and time.monotonic() - self._last_commit >= self.options.transaction_interval_ms / 1000
                ):
                    next_commit = now + self.options.commit_interval_ms
                    self._commit()
        except (TransactionAborted, TransactionFenced) as exc:
            failed = True
            self.status = "failed"
            log.error(
                "executor transaction failed: stopping (a restart restores the last committed state)",
                fenced=isinstance(exc, TransactionFenced),
                error=str(exc),
            )
            raise
        except KafkaException as exc:
            failed = True
            if self.transactional and exc.args[0].fatal():  # e.g. a produce after a newer executor fenced us
                log.error("executor producer failed for good: stopping", error=exc.args[0].str())
                raise TransactionFenced(exc.args[0].str()) from exc
            raise
        except:  # noqa: E722 - anything (confluent-kafka may raise a bare KafkaError object): no commit on the way out
            failed = True
            raise
        finally:
            self.status = "stopping"
            try:
                if not failed:
                    self._commit()
                elif self.transactional:
                    self._abort_quietly()
            except (TransactionAborted, TransactionFenced) as exc:
                failed = True
                log.error("last executor transaction failed", error=str(exc))
                raise
            finally:
                self._consumer.close()
                self._risk.close()
                self.status = "failed" if failed else "stopped"

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        signals = sorted(p.partition for p in partitions if p.topic == self.prefix + "signals")
        t0 = time.monotonic()
        if self.transactional:
            # not here: a transactional offset commit from inside the rebalance callback waits for the
            # join this callback is part of (seen hanging after a broker restart); the loop does it next
            self._fence_check = list(partitions)
        idle = self.options.restore_idle_s
        state = read_to_end(
            self.bootstrap,
            {self.prefix + "positions": signals, self.prefix + "orders": signals, self.prefix + "risk.events": None},
            self.serde,
            idle_s=idle,
        )
        positions, orders, risk = (state[self.prefix + name] for name in ("positions", "orders", "risk.events"))
        now = self.clock()
        broker = self.broker if self.broker is not None else build_broker(self.mode, self.config)
        executor = Executor(self.config, self.mode, broker, self.sink, now)
        summary = executor.restore(
            positions.records,
            orders.records,
            risk.records,
            now,
            signals=lambda ids: self._read_signals(signals, ids),
            committed_cut=self.transactional,
        )
        if self.transactional:
            trades, books = self._read_before_committed(consumer, signals)
            executor.warm_market(trades, books)
        total = len(topic_metadata(consumer, self.prefix + "signals").partitions)
        executor.owner_ok = signals == list(range(total))
        self._risk.assign([TopicPartition(self.prefix + "risk.events", p, off) for p, off in risk.next_offsets.items()])
        log.info(
            "executor state restored",
            partitions=signals,
            seconds=round(time.monotonic() - t0, 3),
            risk_state=executor.guard.state_name(now),
            daily_pnl_r=executor.guard.state.daily_pnl_r,
            sole_writer=executor.owner_ok,
            **summary,
        )
        if not executor.owner_ok:
            log.error(
                "another executor shares the input partitions: new entries blocked", assigned=signals, partitions=total
            )
        if self.reconciler is not None:  # reconcile first, then trade
            self._reconcile(executor, self.clock())
        self.executor = executor
        self.restores += 1
        self.status = "running" if executor.owner_ok else "degraded"

    def _check_not_fenced(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Commit the assigned partitions' committed offsets again in a transaction of their own: a
        no-op for the group, but the transaction coordinator checks our producer epoch. An executor
        stopped (SIGSTOP, a long pause) while a newer one took over rejoins the group when it wakes; with
        nothing left to handle it would never publish, never learn it was fenced, and keep partitions
        from its successor (which then blocks new entries as not the sole writer). Raises
        `TransactionFenced` for such a zombie."""
        try:
            committed = [tp for tp in committed_offsets(consumer, partitions, 10) if tp.offset >= 0]
        except (KafkaException, CommittedOffsetError) as exc:
            log.warning("committed offsets not read: producer epoch not checked on assignment", error=str(exc))
            return
        if not committed:
            return
        try:
            # bounded well below the group's max poll interval: this runs inside the assignment callback
            self.publisher.commit_transaction(committed, consumer.consumer_group_metadata(), timeout=10.0)
        except TransactionAborted as exc:  # a broker still recovering (not a fencing): checked at the next commit
            log.warning("producer epoch not checked on assignment", error=str(exc))
        self.publisher.begin_transaction()

    def _reconcile(self, ex: Executor, now: int) -> None:
        report = ex.reconcile(self.reconciler, now)
        if report.error is not None:
            log.error("reconciliation failed: new entries blocked", error=report.error)
        elif report.findings or not self._reconciled_once:  # the first run and every run that found something
            log.info(
                "reconciliation done",
                policy=report.policy,
                findings=len(report.findings),
                outcomes=sorted({f"{f.kind}:{f.outcome}" for f in report.findings}),
            )
            self._reconciled_once = True

    def _read_before_committed(self, consumer: Consumer, partitions: list[int]) -> tuple[list[dict], list[dict]]:
        """The last `WARM_RECORDS` committed records of each assigned md.trades and md.book partition
        before the group's committed offset (the inputs the previous run handled last); none for a
        partition without a committed offset. Undecodable records are skipped (they were dead-lettered)."""
        names = (self.prefix + "md.trades", self.prefix + "md.book")
        try:
            committed = committed_offsets(consumer, [TopicPartition(t, p) for t in names for p in partitions], 10)
        except (KafkaException, CommittedOffsetError) as exc:
            log.warning("inputs before the committed offsets not read: markets start without data", error=str(exc))
            return [], []
        ends = {(tp.topic, tp.partition): tp.offset for tp in committed if tp.offset > 0}
        out: dict[str, list[dict]] = {name: [] for name in names}
        if not ends:
            return [], []
        reader = Consumer(
            consumer_config(
                self.bootstrap,
                group_id=f"{self._group}-warm",
                **{"enable.partition.eof": True, "isolation.level": "read_committed"},
            )
        )
        try:
            reader.assign([TopicPartition(t, p, max(0, end - WARM_RECORDS)) for (t, p), end in ends.items()])
            pending, deadline = set(ends), time.monotonic() + 30
            while pending and time.monotonic() < deadline:
                for msg in reader.consume(1000, 0.2):
                    tp = (msg.topic(), msg.partition())
                    if msg.error():
                        if msg.error().code() == KafkaError._PARTITION_EOF:
                            pending.discard(tp)
                        continue
                    if msg.offset() >= ends[tp]:
                        pending.discard(tp)
                        continue
                    try:
                        out[msg.topic()].append(self.serde.decode(msg.value()))
                    except Exception:  # noqa: BLE001 # nosec B110 # an undecodable record was dead-lettered when it was handled
                        pass
                    if msg.offset() >= ends[tp] - 1:
                        pending.discard(tp)
            if pending:
                log.warning("inputs before the committed offsets not read to the end", partitions=sorted(pending))
        finally:
            reader.close()
        return out[names[0]], out[names[1]]

    def _read_signals(self, partitions: list[int], ids: set[str]) -> dict[str, dict[str, Any]]:
        """The signal records of `ids` still on the assigned `signals` partitions (for unfinished entries)."""
        try:
            snap = read_to_end(
                self.bootstrap, {self.prefix + "signals": partitions}, self.serde, idle_s=self.options.restore_idle_s
            )
        except StateReadError as exc:
            log.error("signals of unfinished entries not readable", error=str(exc))
            return {}
        return {r["signal_id"]: r for r in snap[self.prefix + "signals"].records if r.get("signal_id") in ids}

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._commit()
        for tp in partitions:
            self._handled.pop((tp.topic, tp.partition), None)
        self.aligner.drop([(self._names[tp.topic], tp.partition) for tp in partitions if tp.topic in self._names])
        for tp in partitions:
            self._holding.pop(tp.partition, None)
            self._checked.pop(tp.partition, None)
            self._start.pop((tp.topic, tp.partition), None)
            self._paused.discard((self._names.get(tp.topic, tp.topic), tp.partition))
        self.executor = None
        self.status = "rebalancing"

    def _hold(self, msg) -> None:
        """Decode an input and hand it to the aligner (`execution.input_order`); an undecodable one is
        dead-lettered when its turn comes, so offsets are still stored in order."""
        name = self._names[msg.topic()]
        self.metrics.messages_in.labels(name).inc()
        try:
            record = self.serde.decode(msg.value())
            when = int(record[TIME_FIELD[name]])
        except Exception as exc:  # not ours to fix: keep the bytes and the reason, go on
            record, when = exc, self.aligner.newest(name, msg.partition())
        self.aligner.add(name, msg.partition(), when, msg.offset(), (record, msg))
        self._holding.pop(msg.partition(), None)  # news: the partition's wait starts again

    def _release(self, ex: Executor) -> None:
        """Process the inputs the aligner releases; a partition that holds inputs, gets no new record for
        `max_hold_s` and whose holding topics have nothing left to read (an end never reported) is released
        as it is."""
        now = time.monotonic()
        for partition in sorted(self.aligner.partitions()):
            released = self.aligner.release(partition)
            if released:
                self._holding.pop(partition, None)
                self._reported.pop(partition, None)
            elif now - self._holding.setdefault(partition, now) >= self.options.max_hold_s and not self._catching_up(
                partition
            ):
                log.warning(
                    "inputs released without event-time order",
                    partition=partition,
                    held=self.aligner.held(partition),
                    topics=self.aligner.describe(partition),
                )
                released = self.aligner.release(partition, force=True)
                self._holding.pop(partition, None)
            for held in released:
                record, msg = held.item
                self._handle(ex, held.topic, record, msg)
                if self.transactional:
                    self._handled[(msg.topic(), msg.partition())] = msg.offset() + 1
                    self._handled_moved = True
                else:
                    self._consumer.store_offsets(msg)
        self._flow_control()

    def _catching_up(self, partition: int) -> bool:
        """Whether a topic that holds `partition` back has records left to read (its next offset is below
        the high watermark): then its news is only queued behind other partitions'. A topic-partition the
        consumer has not delivered anything from yet has no position: its next offset is the group's
        committed offset, else where `start_from` puts it (a replay read from the beginning buries one
        partition's trades behind another's for seconds on a loaded machine; releasing then would trade
        its signals before their trades). Checked at most once a second per partition (it may ask the
        broker)."""
        now = time.monotonic()
        checked = self._checked.get(partition)
        if checked is not None and now - checked[0] < 1.0:
            return checked[1]
        behind = {}
        for topic in self.aligner.blocking(partition):
            tp = TopicPartition(self.prefix + topic, partition)
            position = self._next_offset(tp)
            _, high = self._watermarks(tp)
            if high < 0 or position < 0 or position < high:  # unknown counts as behind: wait for the fetch
                behind[topic] = f"{position}/{high}"
        if behind and now - self._reported.setdefault(partition, now) >= 10:  # say why, every 10 s
            self._reported[partition] = now + 10
            log.info(
                "inputs held for event-time order",
                partition=partition,
                held=self.aligner.held(partition),
                topics=self.aligner.describe(partition),
                reading=behind,
                paused=sorted(self._paused),
            )
        self._checked[partition] = (now, bool(behind))
        return bool(behind)

    def _next_offset(self, tp: TopicPartition) -> int:
        """The next offset the consumer reads from `tp` (negative when the broker does not say)."""
        position = self._consumer.position([tp])[0].offset
        if position >= 0:
            return position
        key = (tp.topic, tp.partition)
        if key not in self._start:
            try:
                committed = committed_offsets(self._consumer, [tp], 5)[0].offset
            except (KafkaException, CommittedOffsetError):  # not "none committed": ask again next time
                return -1
            if committed >= 0:
                self._start[key] = committed
            else:
                low, high = self._watermarks(tp)
                start = low if self.options.start_from == "earliest" else high
                if start < 0:  # the broker did not answer: unknown now, asked again next time
                    return -1
                self._start[key] = start
        return self._start[key]

    def _watermarks(self, tp: TopicPartition) -> tuple[int, int]:
        """(low, high) of `tp`: those of the last fetch, else asked from the broker ((-1, -1) if it does not answer)."""
        low, high = self._consumer.get_watermark_offsets(tp, cached=True)
        if high >= 0 and low >= 0:
            return low, high
        try:
            return self._consumer.get_watermark_offsets(tp, timeout=5, cached=False)
        except KafkaException:
            return -1, -1

    def _flow_control(self) -> None:
        """Pause topic-partitions far ahead of the others (see `execution.input_order`), resume them once drained."""
        held = self.aligner.held_by_topic()
        for tp in [tp for tp in self._paused if held.get(tp, 0) < RESUME_AT]:
            self._consumer.resume([TopicPartition(self.prefix + tp[0], tp[1])])
            self._paused.discard(tp)
        for tp, count in held.items():
            if count > PAUSE_AT and tp not in self._paused:
                self._consumer.pause([TopicPartition(self.prefix + tp[0], tp[1])])
                self._paused.add(tp)

    def _handle(self, ex: Executor, name: str, record: dict | Exception, msg) -> None:
        if isinstance(record, Exception):
            self.metrics.decode_errors.labels(name).inc()
            self.publisher.dead_letter(
                dlq_topic(name), msg.topic(), msg.value() or b"", f"{record}", "decode", key=msg.key()
            )
            return
        now = self.clock()
        if name == "md.trades":
            ex.on_trade(record, now)
        elif name == "md.book":
            ex.on_book(record, now)
        elif name == "md.mark":
            ex.on_mark(record, now)
        else:
            decision = ex.on_signal(record, now)
            if decision.allowed:
                produced_ms = msg.timestamp()[1]
                self.metrics.signal_to_order.observe(max(0.0, time.time() - produced_ms / 1000))

    def _commit(self) -> None:
        """Commit consumed input offsets once every output they caused is acknowledged (transactional:
        together with those outputs, in the open transaction, and begin the next)."""
        if self._consumer is None:
            return
        if self.transactional:
            self._commit_transaction()
            return
        remaining = self.publisher.flush(10)
        if remaining or not self.publisher.healthy:
            log.error(
                "outputs not delivered; input offsets not committed",
                undelivered=remaining,
                failed=len(self.publisher.failed),
            )
            return
        try:
            self._consumer.commit(asynchronous=False)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError._NO_OFFSET:
                log.warning("offset commit failed", error=exc.args[0].str())

    def _commit_transaction(self) -> None:
        """Commit the open transaction with the offsets after the inputs handled so far, then begin the
        next. Raises `TransactionAborted` (aborted: nothing of it is visible) or `TransactionFenced`."""
        if self._consumer is None or not self.publisher.in_transaction:
            return
        if self._handled_moved or self.publisher.transaction_records:
            offsets = [TopicPartition(topic, partition, offset) for (topic, partition), offset in self._handled.items()]
            try:
                self.publisher.commit_transaction(offsets, self._consumer.consumer_group_metadata())
            except TransactionAborted as exc:
                if self.publisher.transaction_records:
                    raise  # outputs were aborted: the in-memory state includes them, only a restore undoes that
                # offsets alone (inputs that published nothing): no state to undo, and offsets only move
                # forward, so the next transaction commits these with its own. A broker that stopped
                # answering ends here; exiting would only get us restarted into the same outage.
                log.warning("input offsets not committed: they go with the next transaction", error=str(exc))
                self.publisher.begin_transaction()
                self._last_commit = time.monotonic()
                return
            self._handled_moved = False
            self.commits += 1
            self.publisher.begin_transaction()
        self._last_commit = time.monotonic()

    def _abort_quietly(self) -> None:
        """On the way out after a failure: abort what is open (a fenced producer cannot; the broker does)."""
        try:
            self.publisher.abort_transaction(5)
        except (TransactionFenced, KafkaException) as exc:
            log.info("open transaction left to the broker to abort", error=str(exc))

    def _refresh_gauges(self, ex: Executor, now: int) -> None:
        self.metrics.open_positions.set(len(ex.positions))
        self.metrics.set_risk_state(ex.guard.state_name(now))  # also after a restart that restored a halt
        for key, t in ex.data_time.items():
            self.metrics.data_age.labels(key).set(max(0.0, (now - t) / 1000))
        if not self.publisher.healthy and self.status == "running":
            self.status = "degraded"

    def health(self) -> dict[str, Any]:
        ex = self.executor
        now = self.clock()
        return {
            "status": self.status,
            "mode": self.mode,
            "open_positions": len(ex.positions) if ex else 0,
            "risk_state": ex.guard.state_name(now) if ex else None,
            "sole_writer": ex.owner_ok if ex else False,
            "exchange_up": ex.venue_up if ex else False,
            "outputs_healthy": self.publisher.healthy,
        }


async def run_executor(
    settings: Settings, mode: str, options: ExecuteOptions | None = None, *, environ: Mapping[str, str] | None = None
) -> int:
    """Entry point of `tapeflow execute`; returns the process exit code."""
    options = options or ExecuteOptions()
    environ = os.environ if environ is None else environ
    try:
        config = load_executor_config(options.config_path)
    except ExecutorConfigError as exc:
        log.error("executor config refused", error=str(exc))
        return 2
    log.info("executor configuration (confirm before trading)", **startup_echo(settings, mode, config))
    exchange: Any = None  # the connected BinanceBroker of testnet/live
    try:
        check_mode_allowed(mode, settings, environ)
        if mode != "paper":
            exchange = await asyncio.to_thread(build_broker, mode, config, settings, environ)
            log.info("exchange connected", mode=mode, symbols_listed=len(exchange.filters))
            if getattr(exchange, "accepted_key_problems", None):
                log.warning(
                    "live trading with a key that " + "; ".join(exchange.accepted_key_problems),
                    accepted_by="TAPEFLOW_ALLOW_UNRESTRICTED_KEY",
                )
    except (LiveTradingRefused, BrokerUnavailable) as exc:
        log.error("executor refused to start", mode=mode, reason=str(exc))
        return 2
    try:
        return await _run_service(settings, mode, config, options, exchange)
    finally:
        if exchange is not None:
            exchange.close()
            log.info("exchange disconnected", mode=mode)


async def _run_service(
    settings: Settings, mode: str, config: ExecutorConfig, options: ExecuteOptions, exchange: Any
) -> int:
    from tapeflow_runtime.endpoints import resolve_broker
    from tapeflow_runtime.errors import TapeflowError
    from tapeflow_runtime.paths import StackPaths

    try:
        bootstrap = resolve_broker(settings, StackPaths(settings.home))
        ensure_topics(
            bootstrap,
            prefix=settings.topic_prefix,
            specs=[topic_spec(n) for n in INPUTS + OUTPUTS]
            + [topic_spec(dlq_topic(n)) for n in ("signals", "md.trades")],
        )
    except (TapeflowError, KafkaException) as exc:
        log.error("no Kafka", error=str(exc))
        return 2
    serde = AvroSerde(registry_from_url(settings.schema_registry_url))
    service = ExecutorService(settings, mode, config, bootstrap, serde, options, broker=exchange)
    ran = await run_thread_with_endpoint(
        service.run,
        build_app(service.metrics.registry, service.health, frozenset({"running"})),
        options.metrics_host,
        options.metrics_port,
        log,
        options.stop,
        started=lambda port: log.info("executor started", mode=mode, metrics_port=port, group=service._group),
    )
    code = 0 if ran and service.publisher.healthy else 1
    log.info(
        "executor stopped", code=code, delivered=service.publisher.delivered, undelivered=len(service.publisher.failed)
    )
    return code
