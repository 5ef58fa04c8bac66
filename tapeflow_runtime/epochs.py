"""Topic epochs: how a stack on the embedded broker keeps every partition short, forever.

Why: Tansu 0.6 (memory storage) walks a partition's whole batch list to answer a fetch, so past about
20,000 record batches a consumer with a short fetch wait receives nothing, and its DeleteRecords is
unimplemented, so a partition can never be trimmed; memory grows without bound. DeleteTopics works
and frees the memory (measured: 30,000 batches, RSS 19 -> 39 -> 19 MB, three rounds). So the stack
never lets a partition grow long: every topic it writes lives in an *epoch*, a set of topics named
``<prefix>[e1.]<catalogue name>`` (see the two name slots below), and before any partition of the
current epoch holds ``epoch_max_batches`` batches the supervisor rolls over to the next one (the steps
are ``tapeflow.stack.epochs``): producers switch at a record boundary, each consumer finishes the old
epoch and commits, the engine's and the executor's state is carried into the new topics, and the
old topics are deleted. Every consumer group carries the epoch prefix too, so a new epoch starts
with fresh groups on fresh topics; nothing else in a service knows about epochs.

Epochs are numbered for ever, but their *names* take turns on two slots: even epochs use the plain
names (``<prefix>md.trades``), odd ones ``<prefix>e1.md.trades``. Epoch N+1 reuses the names of
epoch N-1, whose topics and groups the previous rollover deleted. Why: Tansu 0.6.0 never forgets a
deleted topic-partition (its watermark entry, ~0.6 KB, and each idempotent producer's sequence for
it), so ever-new names grew the broker ~60 KB a rollover for as long as the stack ran; two names keep
that flat (``benchmarks/bench_broker_epochs.py``, variants c and e). Measured on Tansu before relying
on it: a recreated name starts empty (end offset 0) with no committed offset of any group, and a
long-lived idempotent producer writes to it again without a sequence error.

This module is the part every process shares: the names, and the small JSON file in ``TAPEFLOW_HOME``
that says which epoch is current and where a rollover stands (written atomically by the supervisor,
read by the producers, which switch when it says so). Hand-written because it is tapeflow's own
bookkeeping; the file is the checkpoint the rollover resumes from after a crash.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import orjson

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


def rollover_enabled(settings) -> bool:
    """Only the embedded broker needs epochs (Kafka trims partitions itself); not a rehearsal either
    (no producer: its topics are a finite copy) nor with ``epoch_max_batches`` 0."""
    return settings.broker is None and settings.epoch_max_batches > 0 and not settings.namespace


def epoch_slot(epoch: int) -> int:
    """The name slot of ``epoch`` (see the module doc): 0 (the plain names) for even epochs, 1 for odd."""
    if epoch < 0:
        raise ValueError(f"epoch must be >= 0, got {epoch}")
    return epoch % 2


def epoch_prefix(base: str, epoch: int) -> str:
    """The topic (and consumer group) prefix of ``epoch`` under the stack's own ``base`` prefix."""
    slot = epoch_slot(epoch)
    return base if slot == 0 else f"{base}e{slot}."


def current_prefix(settings) -> str:
    """The prefix a *reader* of the stack's topics uses now (``tapeflow topics``, ``replay``, the
    backtest's and research's ``--source topics``, the watchlist backtest's ``--source broker``): the
    current epoch's on the embedded broker when the stack has rolled over, else ``settings.topic_prefix``.
    An external broker (``settings.broker`` set: Kafka trims its partitions itself) has no epochs, even
    if an epochs file is left in the home from an embedded run, nor has a rehearsal's namespace. During a rollover this is the epoch
    being drained (the new one holds only what was produced since the switch)."""
    base = settings.topic_prefix
    if settings.broker or getattr(settings, "namespace", None):  # Kafka, or a rehearsal's own topics
        return base
    path = settings.epochs_file or Path(settings.home) / EPOCHS_FILE
    try:
        return epoch_prefix(base, EpochState.load(path).epoch)
    except (OSError, ValueError):  # unreadable: the plain names, as before the first rollover
        return base


@dataclass
class EpochState:
    """What ``epochs.json`` holds: the current epoch, and the rollover in progress (if any)."""

    epoch: int = 0
    step: str | None = None  # a rollover to epoch + 1 is at this step (None: no rollover)
    started_at: float | None = None  # wall clock of the rollover's start
    rollovers: int = 0  # completed rollovers since the file was created

    @property
    def next_epoch(self) -> int:
        return self.epoch + 1

    @property
    def rolling(self) -> bool:
        return self.step is not None

    def produce_epoch(self) -> int:
        """Where producers write: the next epoch from the ``switch`` step on."""
        if self.step is not None and STEPS.index(self.step) >= PRODUCE_NEXT_FROM:
            return self.next_epoch
        return self.epoch

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
                   rollovers=int(data.get("rollovers", 0)))

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, orjson.dumps(asdict(self), option=orjson.OPT_INDENT_2))


class ProducePrefix:
    """The prefix producers should write to now, read from ``epochs.json`` at most every ``interval_s``
    (a stat per call otherwise; the file changes a few times an hour)."""

    def __init__(self, path: Path, base: str, interval_s: float = 0.25,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.path, self.base, self.interval_s, self.monotonic = path, base, interval_s, monotonic
        self._next_check = 0.0
        self._mtime: int | None = None
        self._prefix = epoch_prefix(base, EpochState.load(path).produce_epoch())

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
                self._prefix = epoch_prefix(self.base, EpochState.load(self.path).produce_epoch())
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
