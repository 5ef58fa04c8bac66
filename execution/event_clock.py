"""The paper executor's clock: event time, advanced by the inputs it is handed, ticked where the
backtest ticks (one execution model, two clocks: paper and backtest on event time, testnet and live
on the wall clock).

Why: a routed entry's maker wait, its TWAP slice intervals, the signal-age check, the stale-data
guard, the UTC day and a pause's end all read the executor's ``now``. On the wall clock, a paper
replay at max speed worked an order over a few milliseconds of wall time while its market moved
seconds of event time, and the same records at 1x worked it differently; the backtest, which passes
event time, did a third thing. On this clock the paper executor passes exactly what the backtest
passes (``backtest.executor_feed.ExecutorFeed``, ``backtest.accounts.Accounts.tick_clocks``), so a
paper run equals the backtest of the same records at any replay speed and across restarts.

The rule (the backtest's dense feed, record by record):

- ``now`` for an input is ``max(its event time, now so far)``: event time never goes back (a late
  signal is handed over at the time the executor has reached, as the backtest hands it). Event
  times: a signal's ``eval_time``, a trade's ``trade_time``, a book's or mark's ``event_time``
  (``execution.input_order.TIME_FIELD``).
- ``on_clock(now)`` runs before an input when ``now >= last tick + 1000`` (at most once per second
  of event time, at the first eligible input at or after it), and the tick's time is that ``now``.
  Eligible are signals, marks, books, and trades of the markets the executor was busy on
  (``Executor.busy_markets``) right after the last signal, mark or book it was handed: the backtest
  ticks before every such record and before every trade of the markets busy when it last fed a
  record of that kind, and passes the other markets' trades without ticking. (The backtest also
  refreshes that set at its hour-slice ends; between a position's close and the next mark or book
  at an hour boundary its ticks may fall one record apart from the service's. Marks come every few
  seconds: we have not seen it change an output.)

What it is not: the service's operational clock. Metrics (data age, consumer lag), SLO samples and
windows (order round trips, stream lag, websocket availability), health, the commit cadence and the
consumer's wait stay on the wall clock: they measure the process, not the market. For the same reason
a paper executor does not route by the wall-clock SLO monitor's flags (its windows would make a
replay's orders depend on its speed); the one degradation rule about the market, the maker fill
ratio, runs on this clock inside the executor and routes paper as it routes the backtest
(``execution.maker_fill_rule``). Kill-switch records (an operator's, at no event time of the market)
are applied at the clock's ``now``.

State across restarts: ``(now, last tick, ticking markets, inputs handed)`` is committed with the
input offsets it belongs to (the metadata of every offset of the transaction, ``encode``/``decode``;
the newest is the one with the most inputs), so a restarted paper executor resumes from the committed
cut with exactly the clock an uninterrupted run had there. The phase of the ticks cannot be derived
from anything else: restarted a few hundred milliseconds off, it would end a maker wait or send a
slice at another time than the uninterrupted run.
Without it (a group that committed before this existed, non-transactional commits), ``now`` starts at
the newest event time the restore saw (warm market data, restored outputs), the next tick one second
of event time later, and the ticking markets are the busy ones.

A quiet market: the clock moves only with inputs. When no record arrives (a feed that stopped, a
replay paused), no maker wait ends, no slice is sent, no pause ends and no market turns stale until
the next record; its time then decides all of them, as the backtest's would. There is no wall-clock
fallback on purpose: any advance on wall time would make a paced replay differ from one at max speed.
The operational side still notices (the executor's data-age gauges and the SLO's websocket sample are
on the wall clock).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

TICK_MS = 1000  # at most one ``on_clock`` per second of event time (``backtest.accounts.Accounts.tick_clocks``)
TICKS_ON_TRADES = "md.trades"
VERSION = 1


@dataclass
class EventClock:
    """``now`` and the tick rule of the module docstring; ``-1``: no input yet."""

    now: int = -1
    last_tick: int = -1
    ticking: frozenset[str] = field(default_factory=frozenset)  # markets whose trades tick
    inputs: int = 0  # inputs handed since the group's first (it orders committed clocks: ``latest``)

    def advance(self, topic: str, event_time: int, key: str) -> tuple[int, bool]:
        """The ``now`` for an input of ``topic`` (an input name: signals, md.trades, md.book, md.mark)
        at ``event_time`` on market ``key``, and whether ``on_clock(now)`` is due before it is handed."""
        self.inputs += 1
        if event_time > self.now:
            self.now = event_time
        now = self.now
        if topic == TICKS_ON_TRADES and key not in self.ticking:
            return now, False
        if now >= self.last_tick + TICK_MS:
            self.last_tick = now
            return now, True
        return now, False

    def handed(self, topic: str, busy: Callable[[], Iterable[str]]) -> None:
        """After an input was handed: a signal, mark or book renews the markets whose trades tick."""
        if topic != TICKS_ON_TRADES:
            self.ticking = frozenset(busy())

    # --- across restarts ----------------------------------------------------------------------------
    def encode(self) -> str:
        """The clock as the metadata of committed offsets (kept small: Kafka's limit is 4096 bytes)."""
        state = {"v": VERSION, "now": self.now, "tick": self.last_tick, "busy": sorted(self.ticking), "n": self.inputs}
        return json.dumps(state, separators=(",", ":"))

    @classmethod
    def decode(cls, metadata: str | None) -> EventClock | None:
        """The clock an ``encode`` wrote; None for anything else (no metadata, another writer's)."""
        if not metadata:
            return None
        try:
            state = json.loads(metadata)
            if not isinstance(state, dict) or state.get("v") != VERSION:
                return None
            busy = frozenset(str(k) for k in state["busy"])
            return cls(int(state["now"]), int(state["tick"]), busy, int(state["n"]))
        except (ValueError, KeyError, TypeError):
            return None

    @classmethod
    def latest(cls, metadata: Iterable[str | None]) -> EventClock | None:
        """The newest clock among committed offsets' metadata: each commit writes its clock on every
        topic-partition the process has handled inputs of, so the one that counts the most inputs is
        the last cut's (a topic-partition not handled since keeps an older one)."""
        clocks = [c for c in map(cls.decode, metadata) if c is not None]
        return max(clocks, key=lambda c: c.inputs, default=None)

    @classmethod
    def from_restore(cls, times: Iterable[int], busy: Iterable[str]) -> EventClock:
        """A clock for a restore without a committed one: ``now`` the newest of ``times`` (warm market
        data, restored outputs), the next tick a second later, the busy markets ticking."""
        now = max(times, default=-1)
        return cls(now, now, frozenset(busy))
