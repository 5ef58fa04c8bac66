"""Event-time alignment of the five ``md.*`` topics, per ``exchange:symbol``.

Why: the engine evaluates at event-time points and a book, mark, liquidation or indicator record that
arrives after its point has been evaluated only counts from the next point on. Kafka gives no order
across topics: a worker catching up on history may read an hour of trades before the book snapshots
of that hour. Fed as read, the engine would then score those trades without their book, and the
signals would differ from a replay of the same data (the backtest parity the issue requires).

Rule. Per key and input topic the aligner remembers the newest event time it has seen. Inputs are
released to the engine only up to the *watermark*: the smallest of those newest times over the topics
whose partition is not caught up (a caught-up partition has been read to its end, so whatever it
delivers next is newer than anything held). Within a topic, records of one key are released as a
prefix in offset order, so "the highest offset applied" describes exactly what the engine has seen
(the de-duplication rule after a restart relies on it). Once every partition is caught up — the live
steady state — nothing is held at all. With the data already in the broker (replays, tests), the
engine therefore sees the same time-ordered input however the fetches interleave.

Progress markers (``md.progress``) replace that rule for a key whose source publishes them: a
marker (watermark W, offsets O) promises that every record of the key with event time <= W is at or
below O in its topic. ``release(key, W, bounds=O)`` then hands over exactly the records the marker
covers (each topic's prefix with time <= W and offset <= O), nothing that merely happens to have
been fetched already, so the engine's input no longer depends on fetch interleaving.

The aligner is pure (no Kafka): the worker tells it which topics are caught up.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from stream_apps.core.events import MarketEvent

from .inputs import TRADES, TradeRows

EVERYTHING = np.iinfo(np.int64).max
NOTHING = np.iinfo(np.int64).min


@dataclass
class Released:
    """Inputs of one key handed to the engine, with the offsets they came from (per topic)."""

    trades: TradeRows | None = None
    events: list[MarketEvent] = field(default_factory=list)
    offsets: dict[str, list[int]] = field(default_factory=dict)  # catalogue topic -> offsets released

    def __bool__(self) -> bool:
        return self.trades is not None or bool(self.events)

    @property
    def count(self) -> int:
        return (len(self.trades) if self.trades is not None else 0) + len(self.events)


@dataclass
class _KeyInputs:
    trades: deque[TradeRows] = field(default_factory=deque)
    events: dict[str, deque[tuple[int, int, MarketEvent]]] = field(default_factory=dict)  # (time, offset, event)
    newest: dict[str, int] = field(default_factory=dict)  # topic -> newest event time seen

    def held(self) -> int:
        return sum(len(t) for t in self.trades) + sum(len(q) for q in self.events.values())


class EventTimeAligner:
    """Holds inputs per key until the topics that could still deliver older data have caught up."""

    def __init__(self, topics: Sequence[str]) -> None:
        self.topics = tuple(topics)
        self._keys: dict[str, _KeyInputs] = {}

    def add_trades(self, key: str, rows: TradeRows) -> None:
        if len(rows) == 0:
            return
        inputs = self._keys.setdefault(key, _KeyInputs())
        inputs.trades.append(rows)
        newest = int(rows.time_ms.max())
        inputs.newest[TRADES] = max(newest, inputs.newest.get(TRADES, newest))

    def add_events(self, key: str, topic: str, items: Sequence[tuple[int, MarketEvent]]) -> None:
        if not items:
            return
        inputs = self._keys.setdefault(key, _KeyInputs())
        queue = inputs.events.setdefault(topic, deque())
        newest = inputs.newest.get(topic, NOTHING)
        for offset, event in items:
            queue.append((event.time_ms, offset, event))
            newest = max(newest, event.time_ms)
        inputs.newest[topic] = newest

    def keys(self) -> list[str]:
        return list(self._keys)

    def held(self, key: str) -> int:
        inputs = self._keys.get(key)
        return inputs.held() if inputs else 0

    def watermark(self, key: str, caught_up: Callable[[str], bool]) -> int:
        """Event time up to which ``key``'s inputs are complete (``caught_up(topic)`` per input topic)."""
        inputs = self._keys.get(key)
        newest = inputs.newest if inputs else {}
        mark = EVERYTHING
        for topic in self.topics:
            if caught_up(topic):
                continue
            seen = newest.get(topic)
            if seen is None:
                return NOTHING
            mark = min(mark, seen)
        return mark

    def release(self, key: str, watermark: int, bounds: Mapping[str, int] | None = None) -> Released:
        """Every held input of ``key`` with event time <= ``watermark`` (prefixes in offset order);
        with ``bounds`` (topic -> highest offset, a progress marker's) only records at or below them
        (a topic not in ``bounds`` releases nothing)."""
        out = Released()
        inputs = self._keys.get(key)
        if inputs is None or watermark == NOTHING:
            return out
        parts: list[TradeRows] = []
        trade_bound = None if bounds is None else bounds.get(TRADES, -1)
        while inputs.trades:
            rows = inputs.trades[0]
            over = rows.time_ms > watermark
            if trade_bound is not None:
                over |= rows.offsets > trade_bound
            beyond = np.flatnonzero(over)
            if len(beyond) == 0:
                parts.append(inputs.trades.popleft())
                continue
            if beyond[0] > 0:
                parts.append(rows.take(slice(0, beyond[0])))
                inputs.trades[0] = rows.take(slice(beyond[0], None))
            break
        if parts:
            out.trades = TradeRows.concat(parts)
            out.offsets[TRADES] = out.trades.offsets.tolist()
        for topic, queue in inputs.events.items():
            offsets = []
            bound = EVERYTHING if bounds is None else bounds.get(topic, -1)
            while queue and queue[0][0] <= watermark and queue[0][1] <= bound:
                _, offset, event = queue.popleft()
                out.events.append(event)
                offsets.append(offset)
            if offsets:
                out.offsets[topic] = offsets
        return out

    def drop(self, key: str) -> None:
        """Forget ``key`` (its partition was revoked: the new owner reads the inputs again)."""
        self._keys.pop(key, None)
