"""The supervisor's topic-epoch rollover on the embedded broker (``tapeflow_runtime.epochs`` says why).

Every ``epoch_check_s`` the supervisor counts the record batches of every partition of the current
epoch (one ListOffsets request; Tansu's end offset counts batches). When one reaches
``epoch_max_batches`` it rolls over from epoch N to N+1, one step at a time, each saved in
``epochs.json`` before it runs and logged with its duration:

1. ``open``: create the N+1 topics, then wait (up to ``ENGINE_READY_WAIT_S``) until the engine's app
   for N+1 has joined its group, gated (``/health`` ``next_prefix``): the ~3 s a new group's first
   join takes on Tansu then passes while the producers still write N, not while features wait. The
   sink (one process for the stack's life) adds the N+1 topics itself: md.*, bars and features from
   the switch on, the carried ones (``CARRIED_TOPICS``) once the carry is recorded
   (``tapeflow_runtime.epochs.ChainFollower``, ``ChainLink.pending``).
2. ``switch``: tell the producers (``epochs.json``); each flushes N and writes every later record to
   N+1. Done when every running producer reports the N+1 prefix, and so does every writer from
   outside the supervisor (``tapeflow backfill``: ``tapeflow_runtime.epochs.EpochWriter``): N's md.*
   topics are final.
3. ``engine``: the engine (one process for the stack's life) finishes N in-process: once its group
   committed N's md.* to their true ends it freezes N's Faust app, carries its state into N+1 and
   opens N+1's app, then stops N's (``stream_apps.faust_app.following``; features pause for the carry,
   the engine's log says how long). Done when its ``/health`` names N+1. N's signals are final then.
4. ``executor``: the same for the executor (``execution.following``: signals, md.trades, md.book,
   md.mark; its N+1 service joins gated when the rollover opens), which records its carry
   (``save_carried``); the step keeps it as N+1's first own records.
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
offset); the state carried is what those commits cover; the sinks' writes are idempotent. No process
is stopped or started by a rollover. A component killed in the middle is restarted by the supervisor
and finds where it stands itself (``tapeflow_runtime.epochs.EpochCursor``); the step waits for it. A
supervisor killed in the middle takes the memory-only broker with it: the next ``up`` starts a fresh
broker on the next epoch (the database holds what was stored; producers warm-start the rest).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from schemas.catalogue import all_topics
from tapeflow.stack.app_services import http_json
from tapeflow_runtime.epochs import (
    EPOCHS_FILE,
    STEPS,
    EpochState,
    epoch_writers,
    load_carried,
    rollover_enabled,
    slot_prefix,
)
from tapeflow_runtime.kafka_client import admin_client, ensure_topics, existing_partitions
from tapeflow_runtime.offsets import group_committed, latest_offsets, true_ends

#: the stack's consumer groups of one epoch (behind its prefix), deleted with its topics
EPOCH_GROUPS = ("tapeflow-engine", "tapeflow-executor-paper")
REPORT_EVERY_S = 30.0
#: the open step waits at most this long for the engine's next app to have joined its group
ENGINE_READY_WAIT_S = 20.0


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
        self._closing: tuple[dict[str, dict[int, int]], int | None] | None = None  # the delete step's ends
        self._next_prune = 0.0
        self.max_seen = 0
        self._opened = False  # the open step created the next epoch's topics (it then waits for the engine)
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
        self._opened = False

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
        self._opened = False

    def _report(self, what: str) -> None:
        now = time.monotonic()
        if now >= self._next_report:
            self._next_report = now + REPORT_EVERY_S
            self.say(f"epochs     {self.state.step}: {what} ({now - self._step_began:.0f}s so far)")

    # -- steps (each returns True when done; called again on the next tick otherwise) ----------------------
    def _step_open(self, bootstrap: str) -> bool:
        """Create the next epoch's topics, then wait (at most ``ENGINE_READY_WAIT_S``) until the engine's
        app for them has joined its group, gated (``/health`` ``next_prefix``): a new group's first
        join takes ~3 s on Tansu, and before the producers switch it delays no feature."""
        new = self.prefix(self.state.next_epoch)
        if not self._opened:
            ensure_topics(bootstrap, prefix=new)
            self._opened = True
        run = self.sup.running.get("engine")
        if run is None or time.monotonic() - self._step_began >= ENGINE_READY_WAIT_S:
            return True  # no engine to wait for (or it does not say): it moves on after the switch
        try:
            body = _health(run)
        except Exception:  # noqa: BLE001 - not answering yet: asked again next tick
            return False
        if "next_prefix" not in body:
            return True  # an engine that does not follow the epochs in-process
        if body["next_prefix"] != new:
            self._report(f"waiting for the engine to join {new or 'the plain names'} before the producers switch")
            return False
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
        """The engine moves on in its own process (``stream_apps.faust_app.following``): done when its
        ``/health`` names the next epoch's prefix."""
        return self._moved_on("engine")

    def _step_executor(self, bootstrap: str) -> bool:
        """The same for the executor (``execution.following``), whose carry into the next epoch is
        recorded (``save_carried``): the logical topics skip the carried records."""
        if not self._moved_on("executor"):
            return False
        carried = load_carried(self.sup.paths.home, self.state.next_epoch)
        if carried is None:
            self._report("waiting for the executor's record of its carry")
            return False
        self.state.next_starts = {name: dict(parts) for name, parts in carried.items()}
        self.say(f"epochs     executor carried {sum(sum(v.values()) for v in carried.values())} records")
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
        tps = existing_partitions(bootstrap, topics)
        if self._ends is None or any(tp not in self._ends for tp in tps):
            self._ends = {**(self._ends or {}), **true_ends(bootstrap, [tp for tp in tps if tp not in (self._ends or {})])}
        ends = {tp: self._ends[tp] for tp in tps if self._ends.get(tp, 0) > 0}
        done = group_committed(bootstrap, group, ends)
        behind = {tp: (done.get(tp, -1), end) for tp, end in ends.items() if done.get(tp, -1) < end}
        if behind:
            sample = ", ".join(f"{t}[{p}] {c}/{e}" for (t, p), (c, e) in sorted(behind.items())[:3])
            self._report(f"waiting for {who} to commit {len(behind)} partitions to their end: {sample}")
            return False
        return True

    def _moved_on(self, name: str) -> bool:
        """Does the running ``name`` report (``/health`` ``topic_prefix``) the next epoch's prefix?"""
        new = self.prefix(self.state.next_epoch)
        run = self.sup.running.get(name)
        if run is None:
            self._report(f"waiting for {name} to run (it is being restarted)")
            return False
        try:
            body = _health(run)
        except Exception as exc:  # noqa: BLE001 - not answering yet (starting): asked again next tick
            self._report(f"waiting for {name} to answer: {exc!r}")
            return False
        if body.get("topic_prefix") != new:
            self._report(f"waiting for {name} to finish epoch {self.state.epoch} and move on to "
                         f"{new or 'the plain names'} ({body.get('detail') or body.get('status')})")
            return False
        return True

    def _producers(self) -> list[tuple[str, dict]]:
        """(name, /health body) of every running producer."""
        return [(name, _health(run)) for name, run in self.sup.running.items() if name.startswith("producer")]

    def _producer_priming(self) -> bool:
        return any(body.get("status") == "priming" or body.get("priming") for _name, body in self._producers())


def _health(run: Any) -> dict:
    """The ``/health`` body of a running service (raises while it does not answer)."""
    return http_json(f"http://{run.record.address}/health")[1]


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
