"""Live updates for the pages: one follower of the stack's topics in the UI process, fanned out to
every page that listens (server-sent events, ``app.UI.stream`` and ``app.UI.view_stream``), fetching
only while one does.

What it reads, per page (``VIEWS``): the chart ``bars.1m`` (each closed minute: the newest bar) and
``signals`` (its markers), one symbol's records; the overview every new ``signals`` record (its
timeline) and a "changed" for ``bars.1m`` (it re-reads its table); the desk a "changed" for the
watchlist's ``xv.features``, ``xv.pairs``, ``xv.orders`` and ``xv.funding`` (it re-reads ranking and
pairs; ``Throttle`` says when). Records of ``bars.1m`` and ``signals`` count for ``queries.EXCHANGE``
only; the watchlist's are never decoded. ``md.trades`` (the heatmap's bubbles, the whale radar) is
not followed: at live rates it is most of the broker's traffic, and a page needs it only when it
re-reads; the bubbles are re-read with the heatmap, the radar with the overview.

How it reads:
- one confluent-kafka consumer for the union of the listening pages' topics: a page with a topic it
  does not read yet makes it add that topic (from its end) before the page is told ``live``; a topic
  no page wants any more is dropped (a chart alone does not pay for the desk's partitions);
- with ``assign`` (no consumer group joined, nothing committed), every
  partition from its end when the consumer starts (asked of the broker before the pages are told
  ``live``: whatever is published after that reaches them): a page wants what happens from now on,
  and gets the stored bar from the database when it connects (``app.UI.stream``);
- the topics are the catalogue names under the stack's topic prefix, the same whether the broker is
  the embedded Kafka or an external one (``TAPEFLOW_BROKER``); a topic that does not exist yet is
  looked for again every ``check_s`` and read from its beginning once it does (all of it is new);
- only while at least one page listens: the first listener starts the consumer (in a thread), and
  ``linger_s`` after the last one left it is closed, so a UI nobody looks at costs the broker
  nothing; the linger spares a reload or a timeframe change a new consumer;
- a broker that cannot be reached (no stack running, a wrong ``TAPEFLOW_BROKER``), or the embedded
  stack stopped or restarted elsewhere while pages listen (``bootstrap()`` is asked again every
  ``check_s``), is said once in the log and every listener is told to poll the database
  instead (``poll``); the next listener after ``retry_s`` tries the broker again.

Hand-written because it is glue: a consumer thread and asyncio queues (one per page).
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import structlog
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaError, KafkaException, TopicPartition

from schemas.serde import AvroSerde
from tapeflow_runtime.kafka_client import consumer_config, end_offsets

log = structlog.get_logger("ui")

#: what each page listens for: catalogue topic -> ``RECORD`` (each record, as an event) or ``CHANGE``
#: ("something changed": the page re-reads the database, ``app.UI.view_stream`` throttles it)
RECORD, CHANGE = "record", "change"
VIEWS: dict[str, dict[str, str]] = {
    "chart": {"bars.1m": RECORD, "signals": RECORD},  # one symbol's
    "overview": {"signals": RECORD, "bars.1m": CHANGE},  # every symbol's
    "desk": {"xv.features": CHANGE, "xv.pairs": CHANGE, "xv.orders": CHANGE, "xv.funding": CHANGE},
}
#: topics whose records carry ``exchange`` and ``symbol`` (decoded and filtered); the others (the
#: watchlist's, one partition each) are never decoded: any record is a change
DECODED = frozenset(("bars.1m", "signals"))
#: how long the consumer stays after the last page left (a reload, a timeframe change reconnect)
LINGER_S = 15.0
#: the fetch wait: Kafka answers a waiting fetch as soon as a record arrives, so this bounds only how
#: often an idle page's consumer asks (twice a second)
FETCH_WAIT_MS = 500
#: after a failed start, listeners poll the database; the broker is tried again this much later
RETRY_S = 30.0
#: how often topics that did not exist yet, and where the broker is, are looked at again
CHECK_S = 2.0
EXCHANGE = "binance"  # the pages' venue (queries.EXCHANGE)
#: what a broker answers about a topic it has created but not yet given a leader everywhere
NEW_TOPIC_CODES = frozenset(
    (
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError.OFFSET_NOT_AVAILABLE,
    )
)


def bar_event(record: dict) -> dict:
    """A ``bars.1m`` record as the pages' 1-minute bar (``queries.candles``' fields, times in seconds)."""
    return {
        "time": record["open_time"] // 1000,
        "open": record["open"],
        "high": record["high"],
        "low": record["low"],
        "close": record["close"],
        "volume": record["volume"],
        "bought": record["buy_volume"],
        "sold": record["sell_volume"],
    }


def signal_event(record: dict) -> dict:
    """A ``signals`` record as ``queries.signals`` gives it (with its symbol: the overview's timeline)."""
    return {
        "time": record["eval_time"] // 1000,
        "symbol": record["symbol"],
        "direction": record["direction"],
        "tier": record["tier"],
        "score": record["score"],
        "price": record["price"],
        "strategy": record["strategy"],
        "signal_id": record["signal_id"],
    }


class BarFold:
    """The newest bar at a timeframe of ``seconds``, folded from its 1-minute bars exactly as
    ``queries.candles`` groups ``bars_1m`` (``date_bin`` from ``origin_s``: the first minute's open,
    the highest high, the lowest low, the last minute's close, summed volumes). A minute seen again
    replaces the earlier copy (the sink upserts bars by open time); a minute older than the current
    bar is ignored (a late or re-published record never moves a page's bar back)."""

    def __init__(self, seconds: int, origin_s: int) -> None:
        self.seconds, self.origin_s = seconds, origin_s
        self.start: int | None = None
        self.minutes: dict[int, dict] = {}

    def bucket(self, t: int) -> int:
        return self.origin_s + (t - self.origin_s) // self.seconds * self.seconds

    def is_new(self, minute: dict) -> bool:
        """Would ``minute`` begin a newer bar than the current one?"""
        return self.start is None or self.bucket(minute["time"]) > self.start

    def add(self, minute: dict) -> bool:
        """Fold ``minute`` in; False when it is older than the current bar (nothing changed)."""
        start = self.bucket(minute["time"])
        if self.start is not None and start < self.start:
            return False
        if start != self.start:
            self.start, self.minutes = start, {}
        self.minutes[minute["time"]] = minute
        return True

    def bar(self) -> dict | None:
        if not self.minutes:
            return None
        ms = [self.minutes[t] for t in sorted(self.minutes)]
        bought, sold = sum(m["bought"] for m in ms), sum(m["sold"] for m in ms)
        return {
            "time": self.start,
            "open": ms[0]["open"],
            "high": max(m["high"] for m in ms),
            "low": min(m["low"] for m in ms),
            "close": ms[-1]["close"],
            "volume": sum(m["volume"] for m in ms),
            "bought": bought,
            "sold": sold,
            "delta": bought - sold,
        }


class Throttle:
    """When to tell a page that its topics changed (it then re-reads the database): ``settle_s`` after
    the first record of a change, so that the sink has stored it, and at most once every
    ``refresh_s``; the records in between are one change. Pure: the caller passes the time.
    Hand-written: a dozen lines of arithmetic, less than wiring a debounce library to asyncio."""

    def __init__(self, refresh_s: float, settle_s: float) -> None:
        self.refresh_s, self.settle_s = refresh_s, settle_s
        self.pending: set[str] = set()
        self.due: float | None = None  # when the pending change is told
        self.told = float("-inf")

    def note(self, topic: str, now: float) -> None:
        self.pending.add(topic)
        if self.due is None:
            self.due = max(now + self.settle_s, self.told + self.refresh_s)

    def take(self, now: float) -> list[str] | None:
        """The topics that changed, when it is time to tell them (else None)."""
        if self.due is None or now < self.due:
            return None
        topics = sorted(self.pending)
        self.pending.clear()
        self.due, self.told = None, now
        return topics


class Listener:
    """One page's queue of ``(kind, item)``: ``("live", None)`` once the consumer reads all of its
    ``topics``, ``("bar", minute)``, ``("signal", signal)`` for its ``RECORD`` topics, ``("changed",
    topic)`` for its ``CHANGE`` topics (at most one queued per topic: taken with ``seen``), or
    ``("poll", reason)`` when the broker cannot be read. ``symbol`` None: every symbol's records."""

    def __init__(
        self, symbol: str | None, loop: asyncio.AbstractEventLoop, topics: dict[str, str] | None = None
    ) -> None:
        self.symbol, self.loop = symbol, loop
        self.topics = dict(VIEWS["chart"] if topics is None else topics)
        self.queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.told_live = False
        self._flagged: set[str] = set()  # CHANGE topics with a "changed" in the queue

    def put(self, kind: str, item: Any = None) -> None:  # from any thread
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, (kind, item))
        except RuntimeError:  # its loop is closed: the page is gone
            pass

    def changed(self, topic: str) -> None:  # the consumer's thread
        if topic not in self._flagged:
            self._flagged.add(topic)
            self.put("changed", topic)

    def seen(self, topic: str) -> None:  # the page's loop, on taking a "changed"
        self._flagged.discard(topic)


class LiveFollower:
    """See the module doc. ``bootstrap()`` is resolved at each consumer start (a stack started after
    the UI is found). The consumer reads the union of the listening pages' topics (``VIEWS``): a page with a topic not read
    yet makes it add that topic (from its end, then the page is told ``live``); topics no page wants
    any more are dropped, except while nobody listens (the linger keeps what was read)."""

    def __init__(
        self,
        bootstrap: Callable[[], str],
        serde: AvroSerde,
        prefix: str,
        linger_s: float = LINGER_S,
        fetch_wait_ms: int = FETCH_WAIT_MS,
        retry_s: float = RETRY_S,
        check_s: float = CHECK_S,
    ) -> None:
        self.bootstrap, self.serde, self.prefix = bootstrap, serde, prefix
        self.linger_s, self.fetch_wait_ms, self.retry_s = linger_s, fetch_wait_ms, retry_s
        self.check_s = check_s
        self._lock = threading.Lock()
        self._listeners: set[Listener] = set()
        self._thread: threading.Thread | None = None
        self._left_at = time.monotonic()  # when the last listener left
        self._closing = threading.Event()
        self.positioned = False  # the consumer has the partitions of ``following``
        self.following: tuple[str, ...] = ()  # catalogue topics the consumer reads (positioned on)
        self.version = 0  # bumped when the listeners' topics change (the consumer looks at it)
        self._open = 0  # consumers not closed yet (a closing one may overlap the next one's start)
        self.starts = 0  # consumers started since the UI started
        self.polls = 0  # consume() calls of the current and past consumers (each may fetch)
        self.delivered = 0  # records handed to listeners
        self.reading: list[str] = []  # topics (with the prefix) assigned now
        self.unreachable: str | None = None  # why the last start failed (listeners poll the database)
        self._failed_at = 0.0

    @property
    def consumer_open(self) -> bool:
        """A consumer exists: the only thing that fetches."""
        with self._lock:
            return self._open > 0

    # --- listeners (the event loop) -------------------------------------------------------------------
    @property
    def listeners(self) -> int:
        with self._lock:
            return len(self._listeners)

    @asynccontextmanager
    async def listen(self, symbol: str | None, topics: dict[str, str] | None = None) -> AsyncIterator[Listener]:
        """A page's listener: ``symbol``'s records (None: every symbol's) of ``topics`` (a ``VIEWS``
        value; default the chart's)."""
        listener = Listener(symbol, asyncio.get_running_loop(), topics)
        self._add(listener)
        try:
            yield listener
        finally:
            self._remove(listener)

    def wanted(self) -> tuple[int, tuple[str, ...]]:
        """(version, the topics to read): the listeners' union, or what is read while nobody listens."""
        with self._lock:
            if not self._listeners:
                return self.version, self.following
            return self.version, tuple(sorted({t for lst in self._listeners for t in lst.topics}))

    def _add(self, listener: Listener) -> None:
        with self._lock:
            self._listeners.add(listener)
            if self._thread is not None:
                if self.positioned and set(listener.topics) <= set(self.following):
                    listener.told_live = True
                    listener.put("live")
                else:
                    self.version += 1  # the consumer adds its topics, then tells it
                return
            if self.unreachable is not None and time.monotonic() - self._failed_at < self.retry_s:
                listener.put("poll", self.unreachable)
                return
            self.starts += 1
            self.version += 1
            self._thread = threading.Thread(target=self._run, name="ui-live", daemon=True)
            self._thread.start()

    def _remove(self, listener: Listener) -> None:
        with self._lock:
            self._listeners.discard(listener)
            if not self._listeners:
                self._left_at = time.monotonic()
            elif set(listener.topics) - {t for lst in self._listeners for t in lst.topics}:
                self.version += 1  # a topic nobody wants now: the consumer drops it

    def close(self, timeout: float = 10.0) -> None:
        """Stop the consumer now (the application's shutdown)."""
        self._closing.set()
        with self._lock:
            thread = self._thread
        if thread is not None:
            thread.join(timeout)

    # --- the consumer (its own thread) ----------------------------------------------------------------
    def _done(self) -> bool:
        """No listener for ``linger_s`` (or closing): give the thread up, under the lock so that a
        listener arriving now starts a new one."""
        with self._lock:
            if self._closing.is_set() or (not self._listeners and time.monotonic() - self._left_at >= self.linger_s):
                self._forget_consumer()
                return True
            return False

    def _forget_consumer(self) -> None:
        """Under the lock: the consumer is gone (done, or failed); a new listener starts another and
        nobody is live until it says so."""
        self._thread = None
        self.positioned = False
        self.following = ()
        for listener in self._listeners:
            listener.told_live = False

    def _run(self) -> None:
        consumer = None
        try:
            bootstrap = self.bootstrap()
            consumer = Consumer(
                consumer_config(
                    bootstrap,
                    group_id=f"tapeflow-ui-live-{uuid.uuid4().hex[:8]}",
                    **{
                        "fetch.wait.max.ms": self.fetch_wait_ms,
                        "auto.offset.reset": "latest",
                        "allow.auto.create.topics": False,
                    },
                )
            )
            with self._lock:
                self._open += 1
            _Reader(self, consumer, bootstrap).run()
        except Exception as exc:  # noqa: BLE001 - any failure to reach the broker: the pages poll the database
            reason = f"{type(exc).__name__}: {exc}"
            with self._lock:
                self._forget_consumer()
                first = self.unreachable is None
                self.unreachable, self._failed_at = reason, time.monotonic()
                for listener in self._listeners:
                    listener.put("poll", reason)
            if first:
                log.warning(
                    "live updates: cannot read the broker's topics; pages poll the database instead",
                    error=reason,
                    retry_s=self.retry_s,
                )
        finally:
            if consumer is not None:
                consumer.close()
                with self._lock:
                    self._open -= 1
                    if not self._open:
                        self.reading = []

    def _deliver(self, name: str, value: bytes | None) -> None:
        with self._lock:
            targets = [lst for lst in self._listeners if name in lst.topics]
        if not targets:
            return
        if name not in DECODED:
            for listener in targets:
                listener.changed(name)
            self.delivered += 1
            return
        try:
            record = self.serde.decode(value)
        except Exception as exc:  # noqa: BLE001 - the sink dead-letters it; a page skips it
            log.warning("live updates: undecodable record skipped", topic=name, error=str(exc))
            return
        if record.get("exchange") != EXCHANGE:
            return
        item = None
        for listener in targets:
            if listener.symbol is not None and listener.symbol != record.get("symbol"):
                continue
            if listener.topics[name] == CHANGE:
                listener.changed(name)
                continue
            if item is None:
                item = ("bar", bar_event(record)) if name == "bars.1m" else ("signal", signal_event(record))
            listener.put(*item)
        self.delivered += 1

    def _positioned(self, version: int, names: tuple[str, ...]) -> None:
        """The consumer reads ``names`` (from the listeners' topics at ``version``): tell each listener
        whose topics all are read that it is live."""
        with self._lock:
            self.positioned, self.following = True, names
            recovered, self.unreachable = self.unreachable, None
            for listener in self._listeners:
                if not listener.told_live and set(listener.topics) <= set(names):
                    listener.told_live = True
                    listener.put("live")
        if recovered is not None:
            log.info("live updates: reading the broker's topics again")


class _Reader:
    """One consumer's life: which topics it reads, from where, and the poll loop."""

    def __init__(self, owner: LiveFollower, consumer: Consumer, bootstrap: str) -> None:
        self.owner, self.consumer, self.bootstrap = owner, consumer, bootstrap
        self.version, self.followed = -1, ()  # the listeners' topics the reader is positioned on
        self.names: dict[str, str] = {}  # topic -> catalogue name, of what is assigned
        self.waiting: dict[str, tuple[str, bool]] = {}  # topic -> (name, from its end): not there yet

    def _retarget(self, timeout: float) -> None:
        """Read the listeners' topics now: drop the ones no page wants, add the new ones from their end
        (a topic that does not exist yet: from its beginning once it does), then say who is live."""
        version, names = self.owner.wanted()
        drop = set(self.followed) - set(names)
        added = [n for n in names if n not in self.followed]
        self._drop(
            [t for t, n in self.names.items() if n in drop] + [t for t, (n, _e) in self.waiting.items() if n in drop]
        )
        for name in added:
            self.waiting[self.owner.prefix + name] = (name, True)
        self._assign_waiting(timeout)
        # topics missing now are read from their beginning once they exist (all of it is new)
        self.waiting = {t: (name, False) for t, (name, _end) in self.waiting.items()}
        self.owner.reading = sorted(self.names)
        self.version, self.followed = version, names
        self.owner._positioned(version, names)

    def _drop(self, topics: list[str]) -> None:
        """Stop reading ``topics`` (assigned or still waiting to exist)."""
        if not topics:
            return
        tps = [tp for tp in self.consumer.assignment() if tp.topic in topics]
        if tps:
            self.consumer.incremental_unassign(tps)
        for topic in topics:
            self.names.pop(topic, None)
            self.waiting.pop(topic, None)

    def _assign_waiting(self, timeout: float) -> None:
        """Assign the waiting topics that exist now (all topics' metadata in one request: a request
        naming a topic could create it on a broker that auto-creates)."""
        if not self.waiting:
            return
        existing = self.consumer.list_topics(timeout=timeout).topics  # raises when the broker is unreachable
        add = []
        for topic, (name, at_end) in list(self.waiting.items()):
            md = existing.get(topic)
            if md is None or md.error is not None or not md.partitions:
                continue
            for p in sorted(md.partitions):
                add.append(TopicPartition(topic, p, OFFSET_END if at_end else OFFSET_BEGINNING))
            self.names[topic] = name
            del self.waiting[topic]
        # "the end" as an offset now, asked of the broker in one request: librdkafka would resolve
        # OFFSET_END lazily after the assignment, and a record published in between (after the pages
        # were told "live") would fall before the end it finds
        ends = self._ends([(tp.topic, tp.partition) for tp in add if tp.offset == OFFSET_END], timeout)
        add = [
            TopicPartition(tp.topic, tp.partition, ends.get((tp.topic, tp.partition), tp.offset))
            if tp.offset == OFFSET_END
            else tp
            for tp in add
        ]
        if add:
            self.consumer.incremental_assign(add)
            self.owner.reading = sorted(self.names)

    def _ends(self, partitions: list[tuple[str, int]], timeout: float) -> dict[tuple[str, int], int]:
        """The end offsets of ``partitions``, asked again while the broker answers with a retriable error:
        a topic created a moment ago is listed before its partitions' leader is known to every part of
        the broker ("not leader for partition"), which is not a broker that cannot be read."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return end_offsets(self.consumer, partitions, timeout=max(0.1, deadline - time.monotonic()))
            except KafkaException as exc:
                err = exc.args[0] if exc.args else None
                settling = isinstance(err, KafkaError) and (err.retriable() or err.code() in NEW_TOPIC_CODES)
                if not settling or time.monotonic() >= deadline:
                    raise
                time.sleep(0.1)

    def run(self) -> None:
        owner = self.owner
        self._retarget(timeout=10.0)  # raises when the broker cannot be reached: the pages poll
        next_check = time.monotonic() + owner.check_s
        while not owner._done():
            if owner.version != self.version:  # a page with other topics came, or the last of one left
                self._retarget(timeout=5.0)
            msgs = self.consumer.consume(500, 0.25)
            owner.polls += 1
            for msg in msgs:
                err = msg.error()
                if err is not None:
                    log.warning("live updates: consume error", error=err.str())
                    continue
                name = self.names.get(msg.topic())
                if name is not None:
                    owner._deliver(name, msg.value())
            if time.monotonic() >= next_check:
                next_check = time.monotonic() + owner.check_s
                if (now := owner.bootstrap()) != self.bootstrap:  # `down` then `up`: a new broker elsewhere
                    raise RuntimeError(f"the broker moved from {self.bootstrap} to {now}")
                self._assign_waiting(timeout=5.0)
