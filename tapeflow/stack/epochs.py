"""The supervisor's topic-epoch rollover on the embedded broker (``tapeflow_runtime.epochs`` says why).

Every ``epoch_check_s`` the supervisor counts the record batches of every partition of the current
epoch (one ListOffsets request; Tansu's end offset counts batches). When one reaches
``epoch_max_batches`` it rolls over from epoch N to N+1, one step at a time, each saved in
``epochs.json`` before it runs and logged with its duration:

1. ``open``: create the N+1 topics. The sink (one process for the stack's life) adds them itself once
   the step after the carry makes them settled (``tapeflow_runtime.epochs.ChainFollower``).
2. ``switch``: tell the producers (``epochs.json``); each flushes N and writes every later record to
   N+1. Done when every running producer reports the N+1 prefix, and so does every writer from
   outside the supervisor (``tapeflow backfill``: ``tapeflow_runtime.epochs.EpochWriter``): N's md.*
   topics are final.
3. ``engine``: wait until the N engine group has committed N's md.* to their ends (its snapshots
   hold every input then), stop it. Its signals are final.
4. ``executor``: the same for the N executor (signals, md.trades, md.book, md.mark), then carry both
   states into N+1 (``stream_apps.faust_app.carry``, ``execution.carry``) and start the N+1 engine and
   executor. Features pause from the stop in step 3 to here (the log says how long).
5. ``sink``: wait until the sink's group has committed every N topic to its end (it then leaves them).
6. ``delete``: N becomes a finished segment: its catalogue topics stay readable (their true ends
   and newest timestamp recorded in ``epochs.json``) for ``topic_retention``, then ``_prune`` deletes
   them (or earlier, oldest first, while the broker's memory is over ``topic_memory_mb``); the
   engine's own topics (changelog, assignor) and N's consumer groups go now; N+1 becomes current.
   A slot's names come back once its segment is deleted (``tapeflow_runtime.epochs``: name slots),
   which is what keeps the broker from growing per rollover: Tansu 0.6.0 keeps a little of every
   deleted topic-partition (~0.6 KB: its watermark cache is never pruned), ~60 KB a rollover of 95
   partitions while every epoch had new names (``benchmarks/bench_broker_epochs.py``). What still
   grows is Tansu's record of each idempotent producer id (every epoch's services start new
   producers): ~13 KB a rollover.

Nothing is lost or doubled: producers switch at a record boundary; each consumer moves on only once
its group committed the old topics to their true ends (read, not taken from a batch-counting end
offset); the state carried is what those commits cover; the sinks' writes are idempotent. A component
killed in the middle is restarted by the supervisor in its own epoch and the step waits for it. A
supervisor killed in the middle takes the memory-only broker with it: the next ``up`` starts a fresh
broker on the next epoch (the database holds what was stored; producers warm-start the rest).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition

from schemas.catalogue import ENGINE_INPUTS, PROGRESS_TOPIC, all_topics
from tapeflow.stack.app_services import EpochConsumer, http_json
from tapeflow_runtime.epochs import EPOCHS_FILE, STEPS, EpochState, epoch_writers, rollover_enabled, slot_prefix
from tapeflow_runtime.kafka_client import (
    HISTORY_FETCH_CONFIG,
    admin_client,
    consumer_config,
    end_offsets,
    ensure_topics,
)
from tapeflow_runtime.offsets import commit_group_start, committed_offsets

EXECUTOR_INPUTS = ("signals", "md.trades", "md.book", "md.mark")
#: the executor's inputs a rollover waits for unconditionally (they make its orders, fills and exits);
#: md.book and md.mark (paper prices, funding) are waited for up to EXECUTOR_QUOTES_WAIT_S: a new
#: executor group started with a backlog was seen to leave them unread (-1 committed) for minutes
EXECUTOR_REQUIRED = ("signals", "md.trades")
#: the stack's consumer groups of one epoch (behind its prefix), deleted with its topics
EPOCH_GROUPS = ("tapeflow-engine", "tapeflow-executor-paper")
EXECUTOR_QUOTES_WAIT_S = 30.0
REPORT_EVERY_S = 30.0


def latest_offsets(bootstrap: str, tps: Iterable[tuple[str, int]]) -> dict[tuple[str, int], int]:
    """End offsets of ``tps`` in one ListOffsets request (on Tansu: record batches, not records).
    A partition the broker did not answer is an error (the step is retried), never "empty"."""
    tps = list(tps)
    consumer = Consumer(consumer_config(bootstrap))
    try:
        ends = end_offsets(consumer, tps, 10)
    finally:
        consumer.close()
    missing = [tp for tp in tps if tp not in ends]
    if missing:
        raise RuntimeError(f"no end offset for {missing[:3]}")
    return {tp: max(offset, 0) for tp, offset in ends.items()}


def true_ends(bootstrap: str, tps: Iterable[tuple[str, int]], timeout_s: float = 60.0,
              last_ms: dict[tuple[str, int], int] | None = None) -> dict[tuple[str, int], int]:
    """The offset after the last *record* of each partition. Tansu's end offset is the last batch's
    base offset + 1, so the last batch is read and its records counted (a batch of five records at
    base 100 ends at 105, not 101). ``last_ms``, when given, receives each non-empty partition's
    newest record timestamp (of its last batch)."""
    latest = latest_offsets(bootstrap, tps)
    ends = dict(latest)
    todo = {tp: off for tp, off in latest.items() if off > 0}
    if not todo:
        return ends
    consumer = Consumer(consumer_config(bootstrap, **{"enable.partition.eof": True, **HISTORY_FETCH_CONFIG}))
    try:
        consumer.assign([TopicPartition(t, p, off - 1) for (t, p), off in todo.items()])
        deadline = time.monotonic() + timeout_s
        while todo and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            tp = (msg.topic(), msg.partition())
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF and tp in todo:
                    todo.pop(tp)
                continue
            ends[tp] = max(ends[tp], msg.offset() + 1)
            if last_ms is not None:
                last_ms[tp] = max(last_ms.get(tp, 0), msg.timestamp()[1])
        if todo:
            raise TimeoutError(f"end of {sorted(todo)[:3]}... not read in {timeout_s:.0f} s")
    finally:
        consumer.close()
    return ends


def committed(bootstrap: str, group: str, tps: Iterable[tuple[str, int]]) -> dict[tuple[str, int], int]:
    """The group's committed offsets (-1: none); a partition the broker answered with an error raises
    (``committed_offsets``): read as "none" it would only stall the step, as a wrong number it could not."""
    wanted = [TopicPartition(t, p) for t, p in tps]
    if not wanted:
        return {}
    consumer = Consumer(consumer_config(bootstrap, group))
    try:
        got = committed_offsets(consumer, wanted, 10)
    finally:
        consumer.close()
    return {(tp.topic, tp.partition): tp.offset if tp.offset >= 0 else -1 for tp in got}


class EpochRoller:
    """Drives one stack's rollovers from the supervisor's loop (``tick``); see the module doc."""

    def __init__(self, sup: Any, say: Callable[[str], None]) -> None:
        """``sup``: the ``Supervisor`` (its services, addresses and start/stop/rename; not imported here:
        the supervisor imports this module)."""
        self.sup = sup
        self.settings = sup.settings
        self.say = say
        self.path = sup.paths.home / EPOCHS_FILE
        self.state = EpochState.load(self.path)
        self.base = self.settings.topic_prefix
        self._next_count = 0.0
        self._step_began = time.monotonic()
        self._rollover_began = time.monotonic()
        self._next_report = 0.0
        self._ends: dict[tuple[str, int], int] | None = None
        self._stopped_engine_at: float | None = None
        self._closing: tuple[dict[str, dict[int, int]], int | None] | None = None  # the delete step's ends
        self._next_prune = 0.0
        self.max_seen = 0
        self.retention_s = self.settings.topic_retention_s()

    # -- names ---------------------------------------------------------------------------------------
    def prefix(self, epoch: int | None = None) -> str:
        return self.state.prefix(self.base, epoch)

    def epoch_topics(self, epoch: int, existing: Iterable[str], catalogue: bool = True) -> list[str]:
        """Every topic of ``epoch``: the catalogue's (unless not ``catalogue``) and the engine's
        (changelog, assignor) under its prefix. Slot 0 has no prefix of its own, so only names tapeflow
        makes are matched, never another epoch's or a rehearsal namespace's."""
        return slot_topics(self.state.prefix(self.base, epoch), existing, catalogue)

    def at_start(self) -> int:
        """Called before the stack starts: the broker is new (memory only), so a rollover the last
        supervisor left unfinished is closed (its topics are gone) and the stack starts on the next
        epoch. Returns the epoch the services start on."""
        if self.state.rolling:
            self.say(f"epochs     the last run stopped in the rollover to epoch {self.state.next_epoch} "
                     f"(step {self.state.step}); the broker starts empty, continuing on epoch {self.state.next_epoch}")
            self.state.close_current({}, time.time(), None, keep=False)
        if self.state.segments or self.state.bases:
            self.say(f"epochs     the broker starts empty (it keeps memory only): the topic history of the last "
                     f"run ({len(self.state.segments)} finished segments) is gone; the database holds what "
                     "was stored (`tapeflow backtest --source db`)")
        # a new broker holds nothing older than now: positions count again from 0
        self.state.segments, self.state.bases, self.state.starts, self.state.cut = [], {}, {}, None
        self.state.history_since = time.time()
        self.state.save(self.path)
        return self.state.epoch

    # -- the loop ----------------------------------------------------------------------------------------
    def tick(self) -> None:
        bootstrap = self.sup.addresses.get("broker")
        if bootstrap is None:
            return
        try:
            if not self.state.rolling:
                self._prune(bootstrap)
                self._maybe_begin(bootstrap)
            else:
                step = self.state.step
                if getattr(self, f"_step_{step}")(bootstrap):
                    self._advance()
        except Exception as exc:  # noqa: BLE001 - a broker hiccup: the step is retried next tick
            self.say(f"epochs     step {self.state.step or 'count'} failed, retrying: {exc!r}")
            self._next_count = time.monotonic() + self.settings.epoch_check_s

    def _maybe_begin(self, bootstrap: str) -> None:
        now = time.monotonic()
        if now < self._next_count:
            return
        self._next_count = now + self.settings.epoch_check_s
        existing = admin_client(bootstrap).list_topics(timeout=2).topics
        tps = [(t, p) for t in self.epoch_topics(self.state.epoch, existing) for p in existing[t].partitions]
        counts = latest_offsets(bootstrap, tps)
        self.max_seen = max(counts.values(), default=0)
        if self.max_seen < self.settings.epoch_max_batches:
            return
        if self._producer_priming():
            return  # a warm start's markers span its whole history: roll once it is live
        busiest = max(counts, key=counts.get)
        self.say(f"epochs     {busiest[0]}[{busiest[1]}] holds {self.max_seen} record batches "
                 f"(limit {self.settings.epoch_max_batches}): rolling over to epoch {self.state.next_epoch}")
        self.state.step = STEPS[0]
        self.state.started_at = time.time()
        self.state.next_slot = self.state.free_slot()
        self.state.save(self.path)
        self._rollover_began = self._step_began = now

    def _advance(self) -> None:
        step = self.state.step
        took = time.monotonic() - self._step_began
        self.say(f"epochs     {step} done ({took:.1f}s)")
        index = STEPS.index(step) + 1
        if index == len(STEPS):
            total = time.monotonic() - self._rollover_began
            ends, last_ms = self._closing or ({}, None)
            self.state.close_current(ends, time.time(), last_ms, keep=self.retention_s != 0)
            self._closing = None
            self.say(f"epochs     now on epoch {self.state.epoch} (rollover took {total:.1f}s)")
        else:
            self.state.step = STEPS[index]
        self.state.save(self.path)
        self._step_began = time.monotonic()
        self._ends = None

    def _report(self, what: str) -> None:
        now = time.monotonic()
        if now >= self._next_report:
            self._next_report = now + REPORT_EVERY_S
            self.say(f"epochs     {self.state.step}: {what} ({now - self._step_began:.0f}s so far)")

    # -- steps (each returns True when done; called again on the next tick otherwise) ----------------------
    def _step_open(self, bootstrap: str) -> bool:
        ensure_topics(bootstrap, prefix=self.prefix(self.state.next_epoch))
        return True

    def _step_switch(self, bootstrap: str) -> bool:
        new = self.prefix(self.state.next_epoch)
        for name, body in self._producers():
            if body.get("topic_prefix") != new:
                self._report(f"waiting for {name} to write to {new or 'the plain names'}")
                return False
        for writer in epoch_writers(self.sup.paths.home):  # `tapeflow backfill` into the running stack
            if writer.extra.get("topic_prefix") != new:
                self._report(f"waiting for {writer.name} (pid {writer.pid}) to write to {new or 'the plain names'}")
                return False
        return True

    def _step_engine(self, bootstrap: str) -> bool:
        old = self.prefix()
        engine = self._retire("engine")
        group = f"{old}tapeflow-engine" if engine is None else engine.app_id
        if not self._drained(bootstrap, group, [old + t for t in (*ENGINE_INPUTS, PROGRESS_TOPIC)], "engine"):
            return False
        self.sup.stop_service(f"engine-e{self.state.epoch}")
        self._stopped_engine_at = time.monotonic()
        return True

    def _step_executor(self, bootstrap: str) -> bool:
        old, new = self.prefix(), self.prefix(self.state.next_epoch)
        executor = self._retire("executor")
        group = f"{old}tapeflow-executor-paper" if executor is None else executor.group_id
        if not self._drained(bootstrap, group, [old + t for t in EXECUTOR_REQUIRED], "executor"):
            return False
        quotes = [old + t for t in EXECUTOR_INPUTS if t not in EXECUTOR_REQUIRED]
        if not self._drained(bootstrap, group, quotes, "executor"):
            if time.monotonic() - self._step_began < EXECUTOR_QUOTES_WAIT_S:
                return False
            self.say(f"epochs     executor-e{self.state.epoch}: md.book/md.mark not read to their end in "
                     f"{EXECUTOR_QUOTES_WAIT_S:.0f}s; moving on (they are stored by the sink either way)")
        self.sup.stop_service(f"executor-e{self.state.epoch}")
        # imported here: every `tapeflow` command loads this module through the supervisor, and these
        # pull in the engine's strategy code and numba (`tapeflow status` spent ~0.4 CPU-s on them)
        from execution.carry import carry_executor_state
        from stream_apps.faust_app.carry import carry_engine_state

        carried = carry_engine_state(bootstrap, f"{old}tapeflow-engine", f"{new}tapeflow-engine")
        ends = carry_executor_state(bootstrap, old, new)
        # the carried records open the new epoch's topics; the logical topics skip them (they are the
        # old epoch's records again)
        self.state.next_starts = {name: dict(parts) for name, parts in ends.items()}
        # both new groups start at the epoch's beginning (their history is carried, not re-read: a new
        # engine group would otherwise spend ~15 s priming 25 h from offsets Tansu cannot look up by
        # time), the executor's after the carried signals
        commit_group_start(bootstrap, f"{new}tapeflow-engine", [new + t for t in (*ENGINE_INPUTS, PROGRESS_TOPIC)])
        commit_group_start(bootstrap, f"{new}tapeflow-executor-paper", [new + t for t in EXECUTOR_INPUTS],
                           {new + "signals": ends["signals"]})
        copied = sum(sum(v.values()) for v in ends.values())
        self.say(f"epochs     carried the engine state of {carried} keys and {copied} executor records")
        self.sup.start_epoch_consumers([n for n in ("engine", "executor") if not self._running_on(n, new)], new)
        if self._stopped_engine_at is not None:
            self.say(f"epochs     features paused {time.monotonic() - self._stopped_engine_at:.1f}s "
                     f"(engine stopped -> new engine started)")
        return True

    def _step_sink(self, bootstrap: str) -> bool:
        """The sink follows the segments itself (one process, its group the stack's): wait until it
        has committed the old epoch's topics to their ends, so retention never deletes unstored data."""
        old = self.prefix()
        from sinks.service import default_topics

        return self._drained(bootstrap, f"{self.base}tapeflow-sink", [old + t for t in default_topics()], "sink")

    def _step_delete(self, bootstrap: str) -> bool:
        """The old epoch becomes a finished segment: its catalogue topics stay readable for the retention
        (``_prune`` deletes them later); the engine's own topics and the epoch's consumer groups go now.
        With retention 0 its catalogue topics go now too."""
        admin = admin_client(bootstrap)
        existing = admin.list_topics(timeout=10).topics
        keep = self.retention_s != 0
        if keep and self._closing is None:
            kept = self.epoch_topics(self.state.epoch, existing)
            stamps: dict[tuple[str, int], int] = {}
            ends = true_ends(bootstrap, [(t, p) for t in kept if not t.startswith(self.prefix() + "tapeflow-")
                                         for p in existing[t].partitions], last_ms=stamps)
            old = self.prefix()
            by_topic: dict[str, dict[int, int]] = {}
            for (topic, partition), end in ends.items():
                by_topic.setdefault(topic[len(old):], {})[partition] = end
            self._closing = (by_topic, max(stamps.values(), default=None))
        doomed = self.epoch_topics(self.state.epoch, existing, catalogue=not keep)
        if doomed:
            _settle(admin.delete_topics(doomed, operation_timeout=30), "UNKNOWN_TOPIC")
        # and its consumer groups, by name (Tansu answers DeleteGroups for an unknown group with
        # success; its ListGroups lists only groups holding committed offsets, and deleting a topic
        # already drops those). Hygiene more than memory: bench_broker_epochs measured ~0.3 MB per 100
        # rollovers given back, at its noise level (the broker's growth is per deleted topic name, see
        # the module doc). So a failed or refused deletion is logged and skipped: it must never hold
        # the rollover in this step (the next epoch would then grow past the batch limit).
        stale = [self.prefix() + name for name in EPOCH_GROUPS]
        try:
            _settle(admin.delete_consumer_groups(stale, request_timeout=30), "GROUP_ID_NOT_FOUND")
            groups = f"{len(stale)} consumer groups"
        except Exception as exc:  # noqa: BLE001 - unsupported or failed: the groups stay, the rollover goes on
            self.say(f"epochs     could not delete the consumer groups of epoch {self.state.epoch} "
                     f"({exc!r}); leaving them")
            groups = "0 consumer groups"
        kept_note = f"; its {len(all_topics())} catalogue topics are kept as a segment" if keep else ""
        self.say(f"epochs     deleted {len(doomed)} topics and {groups} of epoch {self.state.epoch}{kept_note}")
        return True

    # -- retention -----------------------------------------------------------------------------------------
    def _prune(self, bootstrap: str) -> None:
        """Delete finished segments wholly older than the retention, and the oldest ones while the
        broker's memory is over ``topic_memory_mb`` (the status line says so)."""
        now = time.monotonic()
        if now < self._next_prune or not self.state.segments:
            return
        self._next_prune = now + self.settings.epoch_check_s
        doomed = self.state.expired(time.time(), self.retention_s)
        reason = "retention"
        if not doomed and self.settings.topic_memory_mb > 0:
            rss = self._broker_rss_mb()
            if rss is not None and rss > self.settings.topic_memory_mb:
                doomed, reason = self.state.segments[:1], "memory"
                kept_h = (time.time() - self.state.segments[0].closed_at) / 3600
                self.state.cut = (f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC: the broker used {rss:.0f} MB "
                                  f"(budget {self.settings.topic_memory_mb} MB, TAPEFLOW_TOPIC_MEMORY_MB): history cut "
                                  f"to {kept_h:.1f} h")
        if not doomed:
            return
        admin = admin_client(bootstrap)
        existing = admin.list_topics(timeout=10).topics
        names = [t for s in doomed for t in slot_topics(slot_prefix(self.base, s.slot), existing)]
        if names:
            _settle(admin.delete_topics(names, operation_timeout=30), "UNKNOWN_TOPIC")
        gone = {s.epoch for s in doomed}
        self.state.segments = [s for s in self.state.segments if s.epoch not in gone]
        self.state.save(self.path)
        self.say(f"epochs     deleted the segment(s) of epoch {', '.join(map(str, sorted(gone)))} "
                 f"({len(names)} topics): {'past the retention of ' + self.settings.topic_retention if reason == 'retention' else 'over the memory budget'}")

    def _broker_rss_mb(self) -> float | None:
        run = self.sup.running.get("broker")
        if run is None:
            return None
        try:
            import psutil

            return psutil.Process(run.proc.pid).memory_info().rss / 2**20
        except Exception:  # noqa: BLE001 - gone or not readable: no budget decision this time
            return None

    # -- helpers -----------------------------------------------------------------------------------------
    def _drained(self, bootstrap: str, group: str, topics: list[str], who: str) -> bool:
        """Has ``group`` committed every partition of ``topics`` to its true end? (The old epoch's
        topics are final from the switch on, so their ends are read once per step.)"""
        existing = admin_client(bootstrap).list_topics(timeout=10).topics
        tps = [(t, p) for t in topics if t in existing for p in existing[t].partitions]
        if self._ends is None or any(tp not in self._ends for tp in tps):
            self._ends = {**(self._ends or {}), **true_ends(bootstrap, [tp for tp in tps if tp not in (self._ends or {})])}
        ends = {tp: self._ends[tp] for tp in tps if self._ends.get(tp, 0) > 0}
        done = committed(bootstrap, group, ends)
        behind = {tp: (done.get(tp, -1), end) for tp, end in ends.items() if done.get(tp, -1) < end}
        if behind:
            sample = ", ".join(f"{t}[{p}] {c}/{e}" for (t, p), (c, e) in sorted(behind.items())[:3])
            self._report(f"waiting for {who} to commit {len(behind)} partitions to their end: {sample}")
            return False
        return True

    def _running_on(self, name: str, prefix: str) -> bool:
        run = self.sup.running.get(name)
        return run is not None and isinstance(run.service, EpochConsumer) and run.service.prefix == prefix

    def _producers(self) -> list[tuple[str, dict]]:
        """(name, /health body) of every running producer."""
        return [(name, http_json(f"http://{run.record.address}/health")[1])
                for name, run in self.sup.running.items() if name.startswith("producer")]

    def _producer_priming(self) -> bool:
        return any(body.get("status") == "priming" for _name, body in self._producers())

    def _retire(self, name: str) -> EpochConsumer | None:
        """Rename the current epoch's ``name`` to ``name-eN`` (it drains; a restart keeps its epoch)."""
        retired = f"{name}-e{self.state.epoch}"
        run = self.sup.running.get(retired)
        if run is not None:
            return run.service  # type: ignore[return-value]
        run = self.sup.running.get(name)
        if run is None or not isinstance(run.service, EpochConsumer) or run.service.prefix != self.prefix():
            return None
        self.sup.rename_service(name, retired)
        return run.service  # type: ignore[return-value]


def slot_topics(prefix: str, existing: Iterable[str], catalogue: bool = True) -> list[str]:
    """The topics under a slot's ``prefix``: the catalogue's (unless not ``catalogue``) and the engine's
    own (``<prefix>tapeflow-*``)."""
    names = {prefix + t.name for t in all_topics()} if catalogue else set()
    return sorted(t for t in existing if t in names or t.startswith(prefix + "tapeflow-"))


def _settle(futures: dict, gone: str) -> None:
    """Wait for each deletion; one whose error says ``gone`` was deleted already (a resumed step)."""
    for future in futures.values():
        try:
            future.result(timeout=60)
        except Exception as exc:  # noqa: BLE001 - deleted already (a resumed step) is fine
            if gone not in str(exc):
                raise
