"""The maker-fill-ratio degradation rule on event time: what paper and the backtest route by.

The plan's rule "maker fill ratio < 0.25 over 1 h -> market orders" (``execution.slo.RULES``,
``maker_fill_ratio_low``) measures the market, not the process: whether resting limits at the touch get
filled. So in paper and in the backtest it runs on the executor's event time, fed by the executor's own
maker entry orders, and the order router reads it (``Router.flags_at``): a paper replay at any speed,
the backtest over the same records and a restarted paper run route the same entries to market, with
``degraded:market_only`` in their orders' reason. The other rule, round-trip p95 > 500 ms, measures
the process (paper answers inside ``submit``) and stays with the service's wall-clock monitor
(``execution.service_slo``), as do testnet and live, where the real venue's answers arrive on the wall
clock anyway (the service hands its router that monitor's flags).

What it is: an ``SloMonitor`` with only the maker rule (its windows, their alignment to multiples of
5 minutes, the 12-window look-back, the hysteresis and ``clear_when_empty``: nothing re-implemented),
fed one sample per maker (LIMIT) entry order that ended (``execution.slo.maker_fill``: FILLED,
CANCELED, REJECTED or EXPIRED; its filled share), at the order record's ``event_time``, and advanced
to the executor's ``now`` when the router asks (``flags_at``) and on every clock tick (so a change is
seen, logged and audited near its time; a change's time is the end of the window that decided it,
whoever noticed it). One per executor (``EntryFlow.maker_rule``): a backtest with one account per
strategy has one per strategy, the paper service one for its single account.

Restart: the state is a function of the samples (their times and filled shares, in time order) and of
nothing else the run did, and every sample is an orders record the executor published. So a restored
executor replays the maker entries' final records of its mode from the orders topic (``restore``, the
whole topic it reads anyway: the hysteresis makes the state depend on more than the last hour) and
is where the uninterrupted run was at the cut. The changes the replay meets were logged and audited
by the run that made them: they are dropped.

Limits (documented, not expected in practice): a sample is counted in the window open when it comes.
Inputs are handed in event-time order, so a maker that ends on a trade ends at the clock's time;
only a trade handed late (its time before a window boundary the clock has already passed) would put
its sample into the next window where a replay puts it into its own (the same holds for records of
an older replay handed to a paper group whose clock is already later: its samples count at the
clock's window). And the replay starts from the oldest orders record there is: the orders topic
keeps every record (no retention, ``schemas.catalogue``); one given a retention could lose the start
of a degraded period the hysteresis still holds.

Why not the audited state (``execution_degradations``): it is written asynchronously and may lag the
committed cut; the orders topic is exactly the cut.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from execution.degradation import NONE, DegradationFlags
from execution.slo import DegradationChange, SloConfig, SloMonitor, maker_fill

MAKER_SLI = "maker_fill_ratio"


def maker_config(config: SloConfig | None = None) -> SloConfig:
    """``config`` (default: the plan's) with only the rules on the maker fill ratio."""
    base = config or SloConfig()
    return replace(base, rules=tuple(r for r in base.rules if r.sli == MAKER_SLI))


class MakerFillRule:
    """The maker rule of one executor on its event time (module docstring)."""

    def __init__(self, config: SloConfig | None = None) -> None:
        self.config = maker_config(config)
        self.monitor: SloMonitor | None = None  # made at the first time seen (windows are aligned anyway)
        self.changes: list[DegradationChange] = []  # since the last ``take_changes``

    @property
    def flags(self) -> DegradationFlags:
        return NONE if self.monitor is None else self.monitor.flags

    @property
    def active(self) -> frozenset[str]:
        return frozenset() if self.monitor is None else self.monitor.active

    def order_record(self, record: Mapping[str, Any]) -> None:
        """An orders record the executor emitted: a maker entry's end is a sample at its event time."""
        ratio = maker_fill(record)
        if ratio is not None:
            t = int(record["event_time"])
            self._monitor(t).maker_order(ratio, t)
            self.advance(t)

    def advance(self, now_ms: int) -> None:
        """Close the windows that ended by ``now_ms`` (changes go to ``changes``)."""
        if self.monitor is not None:
            self.changes += self.monitor.advance(now_ms)

    def flags_at(self, now_ms: int) -> DegradationFlags:
        """The flags in force at ``now_ms`` (what the router reads: ``Router.flags_at``)."""
        self.advance(now_ms)
        return self.flags

    def take_changes(self) -> list[DegradationChange]:
        """The changes since the last call (the service logs, counts and audits them)."""
        out, self.changes = self.changes, []
        return out

    def restore(self, orders: Iterable[Mapping[str, Any]], mode: str, now_ms: int) -> None:
        """The state at a restart's cut from the orders records of ``mode`` (module docstring): every
        maker entry's end replayed in event-time order, then the windows up to ``now_ms`` closed; the
        changes met are not reported again."""
        ends = [
            (int(r["event_time"]), ratio)
            for r in orders
            if r.get("mode") == mode and (ratio := maker_fill(r)) is not None
        ]
        ends.sort(key=lambda end: end[0])  # stable: records of one time keep the topic's order
        self.monitor = None
        for t, ratio in ends:
            self._monitor(t).maker_order(ratio, t)
        self.advance(now_ms)
        self.changes = []

    def _monitor(self, t: int) -> SloMonitor:
        if self.monitor is None:
            self.monitor = SloMonitor(t, self.config)
        return self.monitor
