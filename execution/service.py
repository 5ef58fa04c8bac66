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
(`execution.service_restore`; `Executor.warm_market`: data freshness, last price, book), and paper
orders still open at the cut are put back in the new paper book (`Executor.restore(committed_cut=True)`),
with what they had filled replayed from their fills records one by one (the restart is bit-identical).
Exchange modes commit the open transaction at the sink's `barrier()` (before an order is sent), so
an order the exchange may have is always in a committed intent; client order ids stay the exchange's
guard against a second order if that commit is lost. An aborted transaction that held outputs (a record not delivered,
the broker refusing the commit) stops the service with exit code 1: the in-memory state includes what
was aborted, and a restart rebuilds it from the committed cut. One that held input offsets only (a
broker that stopped answering during an idle commit) is aborted and the service goes on: nothing of
its state came from it, and the next transaction commits later offsets.

Input order: inputs are processed in event-time order across the assigned partitions
(`execution.input_order`): when the executor is behind (a restart, a replay already in the broker) a
signal is handled before the trades after its evaluation time, so fills are those of the backtest;
live, every topic is at its end and inputs are handled as they arrive.

Clocks (`execution.service_clock`): in paper mode the executor's `now` is event time
(`execution.event_clock`): each input is handed at `max(its event time, the clock)` and `on_clock`
runs where the backtest runs it (at most once per second of event time, on signals, marks, books and
busy markets' trades), so the maker waits, TWAP slices, signal ages, stale data, the UTC day and
pause ends of a paper run are those of the backtest over the same records, at any replay speed; the
clock commits with the input offsets (their metadata) and comes back with them on a restart.
Testnet and live keep the wall clock (real orders and acks). On the wall clock in every mode, since
they measure the process and not the market: metrics (data age, lag), SLO samples and windows,
health, the commit cadence, the consumer's wait. Except the maker-fill-ratio degradation rule, which
measures the market: paper runs it on event time inside the executor (`execution.maker_fill_rule`, as
the backtest does) and routes by it; the service logs and audits its changes. Kill-switch records are
applied at the clock's `now`.

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
from execution.input_order import Held
from execution.metrics import ExecutorMetrics
from execution.reconcile import Reconciler
from execution.routing_source import RevisionTables
from execution.safety import (
    BrokerUnavailable,
    LiveTradingRefused,
    build_broker,
    check_mode_allowed,
    startup_echo,
)
from execution.service_clock import ExecutorClock
from execution.service_commits import OffsetCommitter
from execution.service_inputs import INPUTS, InputGate
from execution.service_restore import read_before_committed, read_outputs, read_signals
from execution.service_slo import DegradationAudit, SloFeed, wall_clock_config
from execution.slo import SloMonitor
from schemas.catalogue import dlq_topic
from schemas.catalogue import topic as topic_spec
from schemas.registry import registry_from_url
from schemas.serde import AvroSerde
from tapeflow_runtime.kafka_client import LagProbe, consumer_config, ensure_topics, topic_metadata
from tapeflow_runtime.publisher import Publisher, PublishMetrics, TransactionAborted, TransactionFenced
from tapeflow_runtime.service_http import build_app, run_thread_with_endpoint
from tapeflow_runtime.settings import Settings

log = structlog.get_logger("executor")

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
    stall_after_s: float = 180.0  # a loop pass running longer is a stall: `/health` says "stalled" (health())
    stop: threading.Event | None = None  # set it to stop the service (tests, embedding)


class KafkaSink:
    """The executor's `OutputSink` on the Kafka publisher; also feeds metrics and echoes the first order."""

    def __init__(
        self,
        publisher: Publisher,
        metrics: ExecutorMetrics,
        mode: str,
        commit: Callable[[], None] | None = None,
        slo: SloMonitor | None = None,
        clock: Callable[[], int] | None = None,
    ) -> None:
        """`commit`: the transactional service's commit of its open transaction (the barrier's); `slo`: the
        monitor the order records feed (round trips from PENDING_NEW, or the barrier, to the next state)."""
        self.publisher = publisher
        self.metrics = metrics
        self.mode = mode
        self.first_order_logged = False
        self.commit = commit
        self.slo = slo
        self.clock = clock or (lambda: int(time.time() * 1000))

    def emit(self, topic: str, key: str, record: dict[str, Any]) -> None:
        self.publisher.publish(topic, key, record)
        self.metrics.observe_record(topic, record)
        if topic == "orders" and self.slo is not None:
            round_trip_ms = self.slo.order_record(record, self.clock())
            if round_trip_ms is not None:
                self.metrics.round_trip.observe(round_trip_ms / 1000)
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
        else:
            remaining = self.publisher.flush(10)
            if remaining or not self.publisher.healthy:
                # fail closed: an order whose intent is not recorded must not be sent
                raise RuntimeError(f"order intent not durable ({remaining} records undelivered); refusing to send")
        if self.slo is not None:  # the order goes to the broker now: its round trip starts here
            self.slo.sending(self.clock())

    @property
    def healthy(self) -> bool:
        return self.publisher.healthy


class ExecutorService:
    """The executor as a Kafka process (module docstring): `run` until `stop` is set; `health` for the
    endpoint. Its jobs: the inputs held for event-time order (`execution.service_inputs`), input offsets
    and their commit with the outputs (`execution.service_commits`), the state read on an assignment
    (`execution.service_restore`, `Executor.restore`)."""

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
        audit: DegradationAudit | None = None,
    ) -> None:
        """`broker`: the connected exchange broker of testnet/live (None: a fresh paper broker per assignment);
        `audit`: where degradation changes are written (None: log lines only)."""
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
        self.committer = OffsetCommitter(self.publisher, self.transactional)
        self.executor_clock = ExecutorClock(mode, self.clock)  # paper: event time (execution.event_clock)
        self.committer.metadata = self.executor_clock.metadata  # the clock commits with its input offsets
        audit = audit or DegradationAudit(None, mode)
        monitor = SloMonitor(self.clock(), wall_clock_config(mode), active=audit.last_active())
        self.slo = SloFeed(monitor, self.metrics, audit, mode)
        self.sink = KafkaSink(
            self.publisher,
            self.metrics,
            mode,
            commit=self.committer.commit_transaction if self.transactional else None,
            slo=self.slo.monitor,
            clock=self.clock,
        )
        self.inputs = InputGate(
            self.prefix, serde, self.metrics, max_hold_s=options.max_hold_s, start_from=options.start_from
        )
        self.aligner = self.inputs.aligner
        self.executor: Executor | None = None
        self.status = "starting"
        self.pass_ended = time.monotonic()  # when the loop last finished a pass (the stall watchdog's clock)
        self.metrics.last_pass.set_function(lambda: self._pass_ended_unix)
        self._pass_ended_unix = time.time()
        self.restores = 0
        self._consumer: Consumer | None = None
        self._lag = LagProbe(self.metrics.lag, self._group)
        self._risk: Consumer | None = None
        self._next_clock = self._next_commit = 0  # wall-clock ms of the next clock tick, the next due commit
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

    @property
    def commits(self) -> int:
        """Transactions committed (tests, benchmarks)."""
        return self.committer.commits

    # --- lifecycle ------------------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        self.committer.start()  # fences an older executor and aborts its open transaction: before any state is read
        self._open_consumers()
        self._next_clock = self._next_commit = 0
        self.pass_ended = time.monotonic()
        failed = False
        try:
            while not stop.is_set():
                self._loop_once()
                self.pass_ended, self._pass_ended_unix = time.monotonic(), time.time()
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
            self._close(failed)

    def _open_consumers(self) -> None:
        """The inputs' group consumer (subscribed) and the group-less follower of risk.events."""
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
        self.inputs.consumer = self.committer.consumer = self._consumer
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

    def _loop_once(self) -> None:
        """One pass: take in inputs, hand the executor the kill-switch records and then the inputs whose
        turn came, tick its clock when due, commit when due. Kill-switch records first: one fetched by
        the time a signal is released applies to that signal (the other way round, a signal and a kill
        switch of the same pass traded the signal)."""
        self._consume_inputs()
        ex = self.executor
        if ex is None:  # no partitions (a join, a broker outage): the next pass waits a clock interval
            self._next_clock = self.clock() + self.options.clock_interval_ms  # instead of consume(timeout=0)
            return
        self._follow_risk_events(ex)
        self.inputs.release(lambda held: self._handle_held(ex, held))
        now = self.clock()
        if now >= self._next_clock:
            self._next_clock = now + self.options.clock_interval_ms
            self._tick(ex, now)
        self.publisher.poll(0)
        if now >= self._next_commit or self.committer.transaction_due(self.options.transaction_interval_ms):
            self._next_commit = now + self.options.commit_interval_ms
            self._commit()

    def _consume_inputs(self) -> None:
        """Wait for input records (a record ends the wait at once; idle, the loop wakes for the next clock
        tick only) and hold them for event-time order."""
        wait_s = min(self.options.clock_interval_ms, max(0, self._next_clock - self.clock())) / 1000
        batch = self._consumer.consume(num_messages=500, timeout=wait_s)
        self.committer.check_fence_pending()  # after an assignment, before any of its records is handled
        for msg in batch:
            if msg.error():
                if msg.error().code() != KafkaError._PARTITION_EOF:
                    log.warning("consume error", error=msg.error().str())
                else:
                    self.inputs.at_end(msg)
                continue
            if self.executor is not None:
                self.inputs.hold(msg)

    def _follow_risk_events(self, ex: Executor) -> None:
        """Kill-switch records (and the other risk.events, which the executor ignores)."""
        for msg in self._risk.consume(num_messages=100, timeout=0):
            if msg.error():
                continue
            try:
                record = self.serde.decode(msg.value())
            except Exception as exc:
                log.warning("undecodable risk.events record ignored", offset=msg.offset(), error=str(exc))
                continue
            ex.on_risk_record(record, self.executor_clock.now())

    def _tick(self, ex: Executor, now: int) -> None:
        """The executor's clock (exchange modes: paper's runs on event time, with its inputs), a due
        reconciliation, gauges and consumer lag."""
        if not self.executor_clock.on_events:
            ex.on_clock(now)
        if self.reconciler is not None and self.reconciler.due(now):
            self._reconcile(ex, now)
        self._refresh_gauges(ex, now)
        self.slo.tick(now, self._streams_up(ex, now))
        self._publish_flags(ex)
        if self._lag.due(time.monotonic()):  # the assignment is built only when it is asked
            self._lag.maybe_refresh(self._consumer, self._consumer.assignment(), time.monotonic())

    def _streams_up(self, ex: Executor, now: int) -> bool | None:
        """The SLO's websocket sample: market data (the producer's streams) newer than `ws_fresh_ms` and, in
        exchange modes, the broker healthy (its user-data websocket connected); None in paper mode before
        any market data (nothing to judge)."""
        newest = max(ex.data_time.values(), default=None)
        md_up = None if newest is None else now - newest <= self.slo.monitor.config.ws_fresh_ms
        if self.mode == "paper":
            return md_up
        return ex.venue_up and md_up is not False

    def _publish_flags(self, ex: Executor) -> None:
        """Hand the order router the wall-clock monitor's degradation flags (`execution.routing.Router.flags`,
        the router of the executor's routed entries; an executor without one has nothing to degrade). Not
        on event time (paper): wall-clock windows would make a replay's orders depend on its speed; its
        executor's router reads the maker rule on event time instead (`execution.maker_fill_rule`, as the
        backtest's), and the round-trip rule, which measures the process, does not route paper."""
        routed = getattr(ex.entry_flow, "routed", None)
        if routed is not None and not self.executor_clock.on_events:
            routed.router.flags = self.slo.flags()

    def _close(self, failed: bool) -> None:
        """On the way out: commit what was handled (abort instead after a failure), close the consumers."""
        self.status = "stopping"
        try:
            if not failed:
                self._commit()
            elif self.transactional:
                self.committer.abort_quietly()
        except (TransactionAborted, TransactionFenced) as exc:
            failed = True
            log.error("last executor transaction failed", error=str(exc))
            raise
        finally:
            self._consumer.close()
            self._risk.close()
            self.slo.audit.close()
            self.status = "failed" if failed else "stopped"

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        signals = sorted(p.partition for p in partitions if p.topic == self.prefix + "signals")
        t0 = time.monotonic()
        if self.transactional:
            # not here: a transactional offset commit from inside the rebalance callback waits for the
            # join this callback is part of (seen hanging after a broker restart); the loop does it next
            self.committer.fence_check = list(partitions)
        positions, orders, fills, risk = read_outputs(
            self.bootstrap, self.serde, self.prefix, signals, self.options.restore_idle_s
        )
        warm: tuple[list[dict], list[dict]] = ([], [])
        if self.transactional:  # the newest inputs before the committed cut
            warm = read_before_committed(consumer, self.bootstrap, self._group, self.serde, self.prefix, signals)
        clock = self.executor_clock
        if not clock.committed(consumer, [self.prefix + name for name in INPUTS], signals):
            clock.from_restore(*warm, [*positions.records, *orders.records])
        now = clock.now()  # paper: the event time of the committed cut (execution.event_clock)
        broker = self.broker if self.broker is not None else build_broker(self.mode, self.config)
        executor = Executor(self.config, self.mode, broker, self.sink, now)
        executor.entry_flow.router.resolver = RevisionTables(self.settings)  # routing tables by revision
        # the market first: a paper order the cut left open is re-entered behind the book it rested in
        executor.warm_market(*warm)
        summary = executor.restore(
            positions.records,
            orders.records,
            risk.records,
            now,
            signals=lambda ids: read_signals(
                self.bootstrap, self.serde, self.prefix + "signals", signals, ids, self.options.restore_idle_s
            ),
            committed_cut=self.transactional,
            fills=fills.records,
        )
        clock.restored(executor)
        self.slo.follow(executor.entry_flow.maker_rule)  # paper: the event-time maker rule, restored above
        self.inputs.assign(signals)
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
            clock=clock.restored_from,
            **summary,
        )
        if not executor.owner_ok:
            log.error(
                "another executor shares the input partitions: new entries blocked", assigned=signals, partitions=total
            )
        if self.reconciler is not None:  # reconcile first, then trade
            self._reconcile(executor, self.clock())
        self._publish_flags(executor)
        self.executor = executor
        self.restores += 1
        self.status = "running" if executor.owner_ok else "degraded"

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

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._commit()
        self.committer.forget(partitions)
        self.inputs.drop(partitions)
        self.executor = None
        self.status = "rebalancing"

    def _handle_held(self, ex: Executor, held: Held) -> None:
        """Handle an input the aligner released; its offset goes with the next commit."""
        record, msg = held.item
        now = self.executor_clock.before(ex, held.topic, held.time, record)
        self._handle(ex, held.topic, record, msg, now)
        self.executor_clock.after(ex, held.topic)
        self.committer.handled_input(msg)

    def _handle(self, ex: Executor, name: str, record: dict | Exception, msg, now: int) -> None:
        """Hand one input to the executor at `now` (the executor's clock); SLO samples on the wall clock."""
        if isinstance(record, Exception):
            self.metrics.decode_errors.labels(name).inc()
            self.publisher.dead_letter(
                dlq_topic(name), msg.topic(), msg.value() or b"", f"{record}", "decode", key=msg.key()
            )
            return
        wall = self.clock()
        if name == "md.trades":
            ex.on_trade(record, now)
            self.slo.trade(record, wall)
        elif name == "md.book":
            ex.on_book(record, now)
        elif name == "md.mark":
            ex.on_mark(record, now)
        else:
            decision = ex.on_signal(record, now)
            self.slo.signal(decision.allowed, decision.reason, wall)
            if decision.allowed:
                produced_ms = msg.timestamp()[1]
                self.metrics.signal_to_order.observe(max(0.0, time.time() - produced_ms / 1000))

    def _commit(self) -> None:
        """Commit consumed input offsets with (transactional) or after the outputs they caused."""
        self.committer.commit()

    def _refresh_gauges(self, ex: Executor, now: int) -> None:
        self.metrics.open_positions.set(len(ex.positions))
        self.metrics.set_risk_state(ex.guard.state_name(self.executor_clock.now()))  # also a restored halt
        for key, t in ex.data_time.items():
            self.metrics.data_age.labels(key).set(max(0.0, (now - t) / 1000))
        if not self.publisher.healthy and self.status == "running":
            self.status = "degraded"

    def health(self) -> dict[str, Any]:
        """The `/health` body. The watchdog: a pass of the loop running longer than
        `ExecuteOptions.stall_after_s` (longer than any bounded wait of a pass: an abort waits up to
        two minutes for its coordinator) is a loop stuck in a call that never returns, as librdkafka's
        `send_offsets_to_transaction` did after a broker restart (`tapeflow_runtime.publisher`). The
        process still answers and its status would still say "running" while no signal is traded:
        it says "stalled" (503) instead. Not while starting or rebalancing (restoring the state from
        long topics is one long pass) nor once stopped."""
        ex = self.executor
        pass_s = time.monotonic() - self.pass_ended
        stalled = self.status in ("running", "degraded") and pass_s > self.options.stall_after_s
        return {
            "status": "stalled" if stalled else self.status,
            "loop_pass_s": round(pass_s, 3),
            "mode": self.mode,
            "open_positions": len(ex.positions) if ex else 0,
            "risk_state": ex.guard.state_name(self.executor_clock.now()) if ex else None,
            "sole_writer": ex.owner_ok if ex else False,
            "exchange_up": ex.venue_up if ex else False,
            "outputs_healthy": self.publisher.healthy,
            "degradation": self.slo.flags().reason or None,
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
    service = ExecutorService(
        settings, mode, config, bootstrap, serde, options, broker=exchange, audit=_degradation_audit(settings, mode)
    )
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


def _degradation_audit(settings: Settings, mode: str) -> DegradationAudit:
    """Degradation changes go to the database's execution_degradations when there is one (the writer
    role: TAPEFLOW_DATABASE_URL or the embedded stack's); without, they are log lines only."""
    from tapeflow_runtime.endpoints import resolve_database
    from tapeflow_runtime.errors import TapeflowError
    from tapeflow_runtime.paths import StackPaths

    try:
        conninfo: str | None = resolve_database(settings, StackPaths(settings.home)).writer
    except TapeflowError as exc:
        log.info("no database: degradation changes are logged, not audited", reason=str(exc))
        conninfo = None
    return DegradationAudit(conninfo, mode)
