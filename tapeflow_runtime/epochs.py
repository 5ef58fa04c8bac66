"""Topic epochs and segments: how a stack on the embedded broker keeps every partition short and
still shows each topic as one log with 24 h of history.

Why: Tansu 0.6 (memory storage) walks a partition's whole batch list to answer a fetch, so past about
20,000 record batches a consumer with a short fetch wait receives nothing, and its DeleteRecords is
unimplemented, so a partition can never be trimmed; memory grows without bound. DeleteTopics works
and frees the memory (measured: 30,000 batches, RSS 19 -> 39 -> 19 MB, three rounds). So the stack
never lets a partition grow long: every topic it writes lives in an *epoch*, a set of topics named
``<prefix>[e<slot>.]<catalogue name>``, and before any partition of the current epoch holds
``epoch_max_batches`` batches the supervisor rolls over to the next one (the steps are
``tapeflow.stack.epochs``): producers switch at a record boundary, each consumer finishes the old
epoch and commits, the engine's and the executor's state is carried into the new topics.

A finished epoch is not deleted: it stays readable as a *segment* of each logical topic for
``topic_retention`` after it was closed (default 24 h; the broker's memory budget
``topic_memory_mb`` may cut it shorter, and says so), then its topics are deleted. Readers
(``reader_chain``: ``tapeflow topics``, ``replay``, ``backtest``/``research --source topics``,
``--verify-against-topics``, notify, the watchlist's broker source) read the chain of segments as one
topic with *logical offsets*: a segment records, per partition, where its own records start (a new
epoch begins with the executor's carried state, which is the older segment's again), where they end
(records, not Tansu's batch count) and the logical offset of its first own record, so positions stay
put when older segments are deleted. ``ChainFollower`` is how a running consumer moves on to the next
segment in-process.

Name slots: an epoch takes the lowest slot no kept segment holds (slot 0 is the plain names, slot k
``<prefix>e<k>.``); without retention the slots alternate 0, 1, 0, ... as before. Why reuse names:
Tansu 0.6.0 never forgets a deleted topic-partition (its watermark entry, ~0.6 KB, and each idempotent
producer's sequence for it), so ever-new names grew the broker ~60 KB a rollover for as long as the
stack ran (``benchmarks/bench_broker_epochs.py``, variants c and e). Measured on Tansu before relying
on it: a recreated name starts empty (end offset 0) with no committed offset of any group, and a
long-lived idempotent producer writes to it again without a sequence error. Tansu with 3,168 topics
(96 segments of the catalogue) idles at 0.0 % CPU and answers a full metadata request in ~80 ms.

Tansu keeps nothing on disk: a new broker (``up`` after ``down``) starts with no segment, and readers
say that history before its start (``history_since``) is in the database.

This module is the part every process shares: the names, the chain, and the small JSON file in
``TAPEFLOW_HOME`` that says which epoch is current, where a rollover stands and which segments are
kept (written atomically by the supervisor, read by the producers, which switch when it says so, and
by every reader). Hand-written because it is tapeflow's own bookkeeping; the file is the checkpoint
the rollover resumes from after a crash.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import orjson

from tapeflow_runtime.errors import TapeflowError
from tapeflow_runtime.files import atomic_write_bytes

EPOCHS_FILE = "epochs.json"

#: rollover steps in order; from ``switch`` on, producers write to the next epoch
STEPS = ("open", "switch", "engine", "executor", "sink", "delete")
PRODUCE_NEXT_FROM = STEPS.index("switch")

#: librdkafka settings of a producer that follows the epochs (it outlives them): never auto-create a
#: topic. librdkafka's producer default allows it, its periodic metadata refresh (every 5 minutes)
#: asks for every topic the producer has written, and Tansu then re-creates each deleted epoch topic
#: as an empty 4-partition one that no rollover deletes again (``benchmarks/bench_broker_epochs.py``)
EPOCH_PRODUCER_CONFIG = {"allow.auto.create.topics": False}

#: the catalogue topics the executor's carry (``execution.carry``) copies into a new epoch before its own
#: records: their first own record is known only once the carry is recorded. Every other topic of a new
#: epoch holds only its own records from its first (offset 0), so it is readable from the switch on
CARRIED_TOPICS: tuple[str, ...] = ("positions", "orders", "fills", "risk.events", "signals")


def rollover_enabled(settings) -> bool:
    """Only the embedded broker needs epochs (Kafka trims partitions itself); not a rehearsal either
    (no producer: its topics are a finite copy) nor with ``epoch_max_batches`` 0."""
    return False


def slot_prefix(base: str, slot: int) -> str:
    """The topic (and consumer group) prefix of name slot ``slot`` under the stack's ``base`` prefix:
    slot 0 is the plain names, slot k ``<base>e<k>.``."""
    if slot < 0:
        raise ValueError(f"slot must be >= 0, got {slot}")
    return base if slot == 0 else f"{base}e{slot}."


def epoch_slot(epoch: int) -> int:
    """The name slot of ``epoch`` in a stack that keeps no finished segment (retention 0): the two
    slots alternate. With retention, slots are handed out by ``EpochState`` (the lowest free one)."""
    if epoch < 0:
        raise ValueError(f"epoch must be >= 0, got {epoch}")
    return epoch % 2


def _state_path(settings) -> Path:
    return settings.epochs_file or Path(settings.home) / EPOCHS_FILE


def _follows_epochs(settings) -> bool:
    return not (settings.broker or getattr(settings, "namespace", None))


def current_prefix(settings) -> str:
    """The prefix a *reader* of the stack's topics uses for the newest segment (``tapeflow topics
    create/lag``): the current epoch's on the embedded broker, else ``settings.topic_prefix``.
    An external broker (``settings.broker`` set: Kafka trims its partitions itself) has no epochs, even
    if an epochs file is left in the home from an embedded run, nor has a rehearsal's namespace. During a
    rollover this is the epoch being drained (the new one holds only what was produced since the
    switch). Readers of history use ``reader_chain``."""
    base = settings.topic_prefix
    if not _follows_epochs(settings):
        return base
    try:
        return EpochState.load(_state_path(settings)).prefix(base)
    except (OSError, ValueError):  # unreadable: the plain names, as before the first rollover
        return base


def reader_chain(settings) -> Chain:
    """The segments a reader of the stack's logical topics reads, oldest first (``Chain``): the
    finished segments still retained, the current epoch and, during a rollover, the next one. On Kafka
    (or a rehearsal) one segment under ``settings.topic_prefix``."""
    base = settings.topic_prefix
    if not _follows_epochs(settings):
        return Chain.single(base)
    path = _state_path(settings)
    try:
        state = EpochState.load(path)
    except (OSError, ValueError) as exc:
        # not the plain names in its place: they may be a deleted slot's, or a slot another segment
        # holds now, and a follower would take the segments for gone
        raise EpochsFileError(f"cannot read the stack's topic segments from {path}: {exc}") from exc
    return state.chain(base)


class EpochsFileError(TapeflowError, ValueError):
    """``epochs.json`` exists but cannot be read (a ``ValueError`` too: a follower looks again later)."""


def _partition_map(raw: dict | None) -> dict[str, dict[int, int]]:
    return {topic: {int(p): int(v) for p, v in parts.items()} for topic, parts in (raw or {}).items()}


@dataclass
class Segment:
    """One finished epoch kept readable: its name slot, when it was closed and, per catalogue topic
    and partition, where its own records start (``starts``: the executor's carried state comes first in
    a new epoch, and is not its own), where they end (records, not Tansu's batch count) and the logical
    offset of its first own record (``bases``: logical offsets stay put when older segments go)."""

    epoch: int
    slot: int
    closed_at: float
    ends: dict[str, dict[int, int]] = field(default_factory=dict)
    starts: dict[str, dict[int, int]] = field(default_factory=dict)
    bases: dict[str, dict[int, int]] = field(default_factory=dict)
    last_ms: int | None = None  # the newest record timestamp it holds (None: unknown or empty)

    def records(self, topic: str | None = None) -> int:
        return sum(end - self.starts.get(t, {}).get(p, 0)
                   for t, parts in self.ends.items() if topic is None or t == topic for p, end in parts.items())

    @classmethod
    def from_json(cls, data: dict) -> Segment:
        return cls(epoch=int(data["epoch"]), slot=int(data["slot"]), closed_at=float(data["closed_at"]),
                   ends=_partition_map(data.get("ends")), starts=_partition_map(data.get("starts")),
                   bases=_partition_map(data.get("bases")), last_ms=data.get("last_ms"))


@dataclass(frozen=True)
class ChainLink:
    """A segment as readers see it: its prefix, and for closed ones where each partition ends."""

    prefix: str
    epoch: int
    closed: bool
    starts: dict[str, dict[int, int]]
    bases: dict[str, dict[int, int]]
    ends: dict[str, dict[int, int]] | None = None  # closed segments only
    last_ms: int | None = None
    #: catalogue topics of a rollover's next epoch not readable yet: before the switch all of them
    #: (nothing is written there), then the carried ones (``CARRIED_TOPICS``) until the executor's
    #: state is carried (their ``starts`` are known only then). A follower of md.trades reads the next
    #: epoch from the switch on, so the sink never waits for the executor's drain of the old one
    pending: frozenset[str] | None = frozenset()  # None: every topic
    closed_at: float | None = None  # wall clock of the segment's close (closed segments only)

    def start(self, topic: str, partition: int) -> int:
        return self.starts.get(topic, {}).get(partition, 0)

    def readable(self, topic: str) -> bool:
        """Can a reader of catalogue topic ``topic`` read this segment yet (see ``pending``)?"""
        return self.pending is not None and topic not in self.pending

    def logical(self, topic: str, partition: int, offset: int) -> int:
        """The logical offset of physical ``offset`` in this segment."""
        return self.bases.get(topic, {}).get(partition, 0) + offset - self.start(topic, partition)


@dataclass(frozen=True)
class Chain:
    """A logical topic's segments, oldest first (the last one is being written), and since when the
    broker holds history at all (``history_since``: wall clock of the broker's start; None on Kafka)."""

    links: tuple[ChainLink, ...]
    history_since: float | None = None
    cut: str | None = None  # why history is shorter than the retention (the memory budget), if it is

    @classmethod
    def single(cls, prefix: str) -> Chain:
        return cls((ChainLink(prefix, 0, False, {}, {}),))

    @property
    def prefixes(self) -> list[str]:
        return [link.prefix for link in self.links]

    @property
    def current(self) -> ChainLink:
        return self.links[-1]

    def physical(self, name: str) -> list[str]:
        """Every segment's physical name of catalogue topic ``name``, oldest first."""
        return [link.prefix + name for link in self.links]

    def locate(self, physical: str, names: Iterable[str]) -> tuple[ChainLink, str] | None:
        """(segment, catalogue name) of ``physical`` if it is one of ``names`` in a segment of this chain."""
        for link in self.links:
            name = physical[len(link.prefix):]
            if physical.startswith(link.prefix) and name in names:
                return link, name
        return None


class ChainFollower:
    """Which physical topics a consumer of logical topics (``names``, catalogue names) reads now, as the
    chain moves on: the open segments readable for each name (``ChainLink.pending``), and a finished one until the consumer's position has
    reached its recorded end in every partition. A consumer polls ``due()`` from its loop and, when
    ``wanted(...)`` differs from what it reads, subscribes to that (``added`` of ``update`` says which
    topics are new: their partitions start at the segment's first own record, not at its end).

    Hand-written because it is tapeflow's own bookkeeping over the chain (the place Quix Streams keeps
    its checkpointing); the Kafka calls stay in the consumer."""

    def __init__(self, names: list[str], load: Callable[[], Chain], interval_s: float = 2.0,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.names, self.load, self.interval_s, self.monotonic = list(names), load, interval_s, monotonic
        self.chain = load()
        self.reading: list[str] = self._open(self.chain)
        self._next = monotonic() + interval_s

    def _open(self, chain: Chain) -> list[str]:
        return [link.prefix + n for link in chain.links if not link.closed for n in self.names if link.readable(n)]

    def catalogue_name(self, physical: str) -> str | None:
        found = self.chain.locate(physical, self.names)
        return None if found is None else found[1]

    def link_of(self, physical: str) -> ChainLink | None:
        found = self.chain.locate(physical, self.names)
        return None if found is None else found[0]

    def resume(self, positions: Callable[[list[str], ChainLink], dict[tuple[str, int], int]]) -> list[str]:
        """At a consumer's start: put the finished segments it has not read to their end before the open
        ones (newest backwards, stopping at the first it has read: segments are read in order), so a
        consumer that died in the middle of a segment switch goes on where it was. Returns ``reading``."""
        behind: list[str] = []
        for link in reversed([lk for lk in self.chain.links if lk.closed]):
            ends = {n: parts for n, parts in (link.ends or {}).items() if n in self.names}
            topics = [link.prefix + n for n, parts in ends.items() if parts]
            at = positions(topics, link) if topics else {}
            if all(at.get((link.prefix + n, p), -1) >= end for n, parts in ends.items()
                   for p, end in parts.items() if end > link.start(n, p)):
                break
            behind = topics + behind
        self.reading = behind + [t for t in self.reading if t not in behind]
        return self.reading

    def retarget(self, names: list[str]) -> list[str]:
        """Follow ``names`` from now on (a reader whose set of topics changes while it runs: the UI's
        pages): the topics of names no longer followed leave ``reading``; returns the open segments'
        topics of the names new here (added to ``reading``)."""
        added = [n for n in names if n not in self.names]
        self.names = list(names)
        self.reading = [t for t in self.reading if self.chain.locate(t, self.names) is not None]
        new = [link.prefix + n for link in self.chain.links if not link.closed for n in added if link.readable(n)]
        self.reading += [t for t in new if t not in self.reading]
        return new

    def due(self) -> bool:
        now = self.monotonic()
        if now < self._next:
            return False
        self._next = now + self.interval_s
        return True

    def update(self, positions: Callable[[list[str], ChainLink], dict[tuple[str, int], int]]
               ) -> tuple[list[str], list[str]] | None:
        """Look at the chain again; returns (topics to read now, the new ones among them), or None when
        nothing changes. ``positions(topics, link)``: the consumer's next offset per partition of
        ``topics`` of the finished segment ``link`` (a partition it has seen the end of since
        ``link.closed_at`` may answer any offset past the end: a finished segment gets nothing more)."""
        try:
            chain = self.load()
        except (OSError, ValueError):  # being replaced: look again next time
            return None
        wanted = self._open(chain)
        done_with = []
        for topic in self.reading:
            if topic in wanted:
                continue
            found = chain.locate(topic, self.names)
            if found is None:
                done_with.append(topic)  # its segment was deleted (retention)
                continue
            link, name = found
            if not link.closed:
                continue  # a rolling epoch: keep reading it
            ends = (link.ends or {}).get(name, {})
            at = positions([topic], link)
            if all(at.get((topic, p), -1) >= end for p, end in ends.items() if end > link.start(name, p)):
                done_with.append(topic)
        keep = [t for t in self.reading if t not in done_with]
        new = [t for t in wanted if t not in keep]
        self.chain = chain
        if not new and len(keep) == len(self.reading):
            return None
        self.reading = keep + new
        return self.reading, new


class ReadPositions:
    """What a consumer without committed offsets (the notifier, the UI's live follower) answers
    ``ChainFollower.update``: its next offset per partition, from the records it consumed, and "past the
    end" for a partition whose end (librdkafka's partition EOF) it reached after the segment was closed.
    The offset alone is not enough on Tansu: its end offset counts record batches, so a partition read
    to its end can stay below the recorded end. ``time.time`` because ``ChainLink.closed_at`` is wall time."""

    PAST_END = 2**62

    def __init__(self, now: Callable[[], float] = time.time) -> None:
        self.now = now
        self.next: dict[tuple[str, int], int] = {}  # the next offset to read per partition
        self.eof_at: dict[tuple[str, int], float] = {}  # wall clock of the last end reached

    def consumed(self, topic: str, partition: int, offset: int) -> None:
        self.next[(topic, partition)] = offset + 1

    def starts_at(self, topic: str, partition: int, offset: int) -> None:
        """An assignment from ``offset``: the position is at least that."""
        self.next[(topic, partition)] = max(self.next.get((topic, partition), 0), offset)

    def at_end(self, topic: str, partition: int) -> None:
        self.eof_at[(topic, partition)] = self.now()

    def __call__(self, topics: list[str], link: ChainLink) -> dict[tuple[str, int], int]:
        done = {tp for tp, at in self.eof_at.items() if tp[0] in topics and at > (link.closed_at or 0)}
        return {**{tp: o for tp, o in self.next.items() if tp[0] in topics}, **{tp: self.PAST_END for tp in done}}


def _next_bases(bases: dict, starts: dict, ends: dict) -> dict[str, dict[int, int]]:
    out: dict[str, dict[int, int]] = {}
    for topic in set(bases) | set(ends):
        parts = set(bases.get(topic, {})) | set(ends.get(topic, {}))
        out[topic] = {p: bases.get(topic, {}).get(p, 0) + ends.get(topic, {}).get(p, 0)
                      - starts.get(topic, {}).get(p, 0) for p in parts}
    return out


@dataclass
class EpochState:
    """What ``epochs.json`` holds: the current epoch, the rollover in progress (if any) and the finished
    segments still retained, each with its name slot."""

    epoch: int = 0
    step: str | None = None  # a rollover to epoch + 1 is at this step (None: no rollover)
    started_at: float | None = None  # wall clock of the rollover's start
    rollovers: int = 0  # completed rollovers since the file was created
    slot: int | None = None  # the current epoch's name slot (None: a file from before slots: epoch % 2)
    next_slot: int | None = None  # the next epoch's, chosen when a rollover begins
    starts: dict[str, dict[int, int]] = field(default_factory=dict)  # the current epoch's first own records
    next_starts: dict[str, dict[int, int]] = field(default_factory=dict)  # the next's (after the carry)
    bases: dict[str, dict[int, int]] = field(default_factory=dict)  # logical offset of the current's first
    segments: list[Segment] = field(default_factory=list)  # finished epochs still readable, oldest first
    history_since: float | None = None  # wall clock when this broker started (it keeps nothing older)
    cut: str | None = None  # the last time the memory budget deleted a segment before its retention

    @property
    def next_epoch(self) -> int:
        return self.epoch + 1

    @property
    def rolling(self) -> bool:
        return self.step is not None

    @property
    def current_slot(self) -> int:
        return epoch_slot(self.epoch) if self.slot is None else self.slot

    def free_slot(self) -> int:
        """The lowest slot no retained segment nor the current epoch holds (names come back once their
        segment is deleted: Tansu keeps ~0.6 KB of every deleted partition name for ever)."""
        taken = {self.current_slot, *(s.slot for s in self.segments)}
        return next(k for k in range(len(taken) + 1) if k not in taken)

    def slot_of(self, epoch: int) -> int:
        if epoch == self.epoch:
            return self.current_slot
        if epoch == self.next_epoch:
            return self.next_slot if self.next_slot is not None else self.free_slot()
        for segment in self.segments:
            if segment.epoch == epoch:
                return segment.slot
        raise ValueError(f"epoch {epoch} is neither current, next nor retained")

    def prefix(self, base: str, epoch: int | None = None) -> str:
        return slot_prefix(base, self.slot_of(self.epoch if epoch is None else epoch))

    def produce_epoch(self) -> int:
        """Where producers write: the next epoch from the ``switch`` step on."""
        if self.step is not None and STEPS.index(self.step) >= PRODUCE_NEXT_FROM:
            return self.next_epoch
        return self.epoch

    def chain(self, base: str) -> Chain:
        links = [ChainLink(slot_prefix(base, s.slot), s.epoch, True, s.starts, s.bases, s.ends, s.last_ms,
                           closed_at=s.closed_at) for s in self.segments]
        links.append(ChainLink(self.prefix(base), self.epoch, False, self.starts, self.bases))
        if self.rolling:  # the next epoch's records follow the current's (a switched producer writes there)
            at = STEPS.index(self.step)
            pending = (None if at < PRODUCE_NEXT_FROM
                       else frozenset(CARRIED_TOPICS) if at <= STEPS.index("executor") else frozenset())
            links.append(ChainLink(self.prefix(base, self.next_epoch), self.next_epoch, False, self.next_starts, {},
                                   pending=pending))
        return Chain(tuple(links), self.history_since, self.cut)

    def close_current(self, ends: dict[str, dict[int, int]], closed_at: float, last_ms: int | None,
                      keep: bool) -> None:
        """The rollover's end: the current epoch becomes a finished segment (kept when ``keep``), the
        next one current, its logical offsets following on from the closed one's."""
        bases = _next_bases(self.bases, self.starts, ends)
        if keep:
            self.segments.append(Segment(self.epoch, self.current_slot, closed_at, ends, self.starts, self.bases,
                                         last_ms))
        self.slot = self.slot_of(self.next_epoch)
        self.epoch, self.rollovers = self.next_epoch, self.rollovers + 1
        self.step = self.started_at = self.next_slot = None
        self.starts, self.next_starts, self.bases = self.next_starts, {}, bases

    def expired(self, now: float, retention_s: float | None) -> list[Segment]:
        """Retained segments wholly older than the retention (closed before ``now - retention_s``)."""
        if retention_s is None:
            return []
        return [s for s in self.segments if s.closed_at <= now - retention_s]

    @classmethod
    def load(cls, path: Path) -> EpochState:
        """The state in ``path``; a missing file is epoch 0 with no rollover (a stack that never rolled)."""
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return cls()
        data = orjson.loads(raw)
        step = data.get("step")
        if step is not None and step not in STEPS:
            raise ValueError(f"{path}: unknown rollover step {step!r}")
        return cls(epoch=int(data.get("epoch", 0)), step=step, started_at=data.get("started_at"),
                   rollovers=int(data.get("rollovers", 0)), slot=data.get("slot"), next_slot=data.get("next_slot"),
                   starts=_partition_map(data.get("starts")), next_starts=_partition_map(data.get("next_starts")),
                   bases=_partition_map(data.get("bases")),
                   segments=[Segment.from_json(s) for s in data.get("segments", [])],
                   history_since=data.get("history_since"), cut=data.get("cut"))

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, orjson.dumps(asdict(self), option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))


class ProducePrefix:
    """The prefix producers should write to now, read from ``epochs.json`` at most every ``interval_s``
    (a stat per call otherwise; the file changes a few times an hour)."""

    def __init__(self, path: Path, base: str, interval_s: float = 0.25,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.path, self.base, self.interval_s, self.monotonic = path, base, interval_s, monotonic
        self._next_check = 0.0
        self._mtime: int | None = None
        state = EpochState.load(path)
        self._prefix = state.prefix(base, state.produce_epoch())

    def __call__(self) -> str:
        now = self.monotonic()
        if now < self._next_check:
            return self._prefix
        self._next_check = now + self.interval_s
        try:
            mtime = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            return self._prefix
        if mtime != self._mtime:
            self._mtime = mtime
            try:
                state = EpochState.load(self.path)
                self._prefix = state.prefix(self.base, state.produce_epoch())
            except (OSError, ValueError):  # a file being replaced: keep the last answer, look again soon
                self._mtime = None
        return self._prefix


WRITERS_DIR = "epoch-writers"


class EpochWriter:
    """A process outside the supervisor that writes md.* into a running embedded stack (`tapeflow
    backfill binance-vision`) and follows its epochs like the stack's own producers.

    Why: the rollover's ``switch`` step waits until every *supervised* producer writes to the next
    epoch, then drains the old topics and deletes them. A backfill still writing to the old names
    after the sink had drained them lost those records when the topics were deleted (its checkpoint
    counted them delivered). So such a writer registers in ``TAPEFLOW_HOME/epoch-writers/<pid>.json``
    (a ``ProcessRecord`` named ``what``, the prefix it writes to in ``extra["topic_prefix"]``); the
    ``switch`` step waits for it too (a dead writer's record is ignored and removed). ``prefix()`` says
    where to write now (``ProducePrefix``); after the writer has delivered everything under the old
    prefix it calls ``switched(prefix)``."""

    def __init__(self, home: Path, base: str, what: str, interval_s: float = 0.25) -> None:
        import os

        from tapeflow_runtime.process_records import ProcessRecord, process_create_time

        self.home = Path(home)
        self.prefix = ProducePrefix(self.home / EPOCHS_FILE, base, interval_s)
        self.path = self.home / WRITERS_DIR / f"{os.getpid()}.json"
        self.record = ProcessRecord(what, os.getpid(), process_create_time(os.getpid()), "", time.time(), "")
        self.current = self.prefix()
        self._save()

    def switched(self, prefix: str) -> None:
        self.current = prefix
        self._save()

    def close(self) -> None:
        self.path.unlink(missing_ok=True)

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.record.extra["topic_prefix"] = self.current
        self.record.save(self.path)


def epoch_writers(home: Path) -> list:
    """The live registered writers (``EpochWriter``'s ``ProcessRecord``s); dead ones' files removed."""
    from tapeflow_runtime.process_records import ProcessRecord, StateFileError

    found = []
    directory = Path(home) / WRITERS_DIR
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        try:
            record = ProcessRecord.load(path)
        except StateFileError:
            continue  # being written, or foreign: looked at again next time
        if record is None:
            continue
        if record.is_alive():
            found.append(record)
        else:
            path.unlink(missing_ok=True)
    return found


class EpochCursor:
    """Where a consumer that follows the epochs in-process (the engine, the executor) stands: which
    epoch it runs on at start, and when the epoch it runs on is finished *for it*.

    Such a consumer is one process for the stack's life. It runs its group of epoch N
    (``<prefix N>tapeflow-engine``) until the rollover reaches its step (``after``: ``engine`` for the
    engine, whose inputs are final once the producers switched; ``executor`` for the executor, whose
    signals are final once the engine moved on). Then it commits N's inputs to their true ends, stops
    its consumer, carries its state into N+1, commits the N+1 group's start and runs that group, in the
    same process: the supervisor only waits until it reports the N+1 prefix (``/health``
    ``topic_prefix``). A process killed anywhere in that sequence is restarted on N and repeats the
    steps not done (each is idempotent), or on N+1 once that group holds committed offsets, which is
    the sequence's last step (``first``)."""

    def __init__(self, path: Path, base: str, group: str, after: str, interval_s: float = 0.25,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        if after not in STEPS:
            raise ValueError(f"unknown rollover step {after!r}")
        self.path, self.base, self.group, self.after = Path(path), base, group, STEPS.index(after)
        self.interval_s, self.monotonic = interval_s, monotonic
        self._next_check = 0.0
        self._mtime: int | None = None
        self._state = EpochState.load(self.path)

    def state(self) -> EpochState:
        """The file's state, read again at most every ``interval_s`` and only when it changed (a file being
        replaced keeps the last answer)."""
        now = self.monotonic()
        if now >= self._next_check:
            self._next_check = now + self.interval_s
            try:
                mtime = self.path.stat().st_mtime_ns
                if mtime != self._mtime:
                    self._state, self._mtime = EpochState.load(self.path), mtime
            except (OSError, ValueError):
                self._mtime = None
        return self._state

    def first(self, started: Callable[[str, str], bool]) -> tuple[int, str]:
        """(epoch, prefix) to run on at start. ``started(group, prefix)``: whether that group holds
        committed offsets (it was started on its topics: the carry into it is done)."""
        state = self.state()
        if state.rolling and STEPS.index(state.step) >= self.after:
            nxt = state.prefix(self.base, state.next_epoch)
            if started(nxt + self.group, nxt):
                return state.next_epoch, nxt
        return state.epoch, state.prefix(self.base)

    def opening(self, epoch: int) -> tuple[int, str] | None:
        """The next (epoch, prefix) once a rollover from ``epoch`` has begun (its name slot is chosen
        then), or once the stack moved past ``epoch``; None before. A consumer can start joining the
        next epoch's group from here on."""
        state = self.state()
        if state.epoch > epoch or (state.rolling and state.epoch == epoch):
            return self.finished(epoch) or (state.next_epoch, state.prefix(self.base, state.next_epoch))
        return None

    def finished(self, epoch: int) -> tuple[int, str] | None:
        """None while ``epoch`` is this consumer's to run; else the (epoch, prefix) to move on to."""
        state = self.state()
        if state.epoch > epoch:  # moved on (a rollover closed after a restart): the current one
            return state.epoch, state.prefix(self.base)
        if state.rolling and state.epoch == epoch and STEPS.index(state.step) >= self.after:
            return state.next_epoch, state.prefix(self.base, state.next_epoch)
        return None


def _carry_file(home: Path, who: str) -> Path:
    return Path(home) / f"epoch-carry-{who}.json"


def save_carried(home: Path, epoch: int, ends: dict[str, dict[int, int]], who: str = "executor") -> None:
    """Record that ``who`` (``engine``, ``executor``) carried its state into ``epoch``: its last step
    before it reads the new epoch, which is how a restarted process knows it runs there
    (``EpochCursor.first``). ``ends``: per catalogue topic and partition, the end of the carried
    records (the new epoch's first own record); the supervisor's ``executor`` step reads the
    executor's into ``next_starts`` (readers of the logical topic skip the carried copies)."""
    atomic_write_bytes(_carry_file(home, who), orjson.dumps({"epoch": epoch, "ends": ends},
                                                             option=orjson.OPT_NON_STR_KEYS))


def load_carried(home: Path, epoch: int, who: str = "executor") -> dict[str, dict[int, int]] | None:
    """``save_carried``'s ends for ``epoch``; None when the carry into it is not recorded (yet)."""
    try:
        data = orjson.loads(_carry_file(home, who).read_bytes())
    except (OSError, ValueError):
        return None
    return _partition_map(data.get("ends")) if data.get("epoch") == epoch else None
