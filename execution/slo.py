"""Execution SLOs and the degradation rules they drive: a pure monitor, every time passed in.

SLIs (service level indicators), each computed per SLO window (`SloConfig.window_ms`, 5 minutes,
aligned to multiples of it in Unix time):

* ``order_round_trip_p95_ms``: p95 of send -> first answer (NEW, or REJECTED) of the orders sent in the
  window (paper answers at once, so ~0; live: the REST round trip).
* ``stream_lag_p95_ms``: p95 of handled time minus exchange event time of the market trades handled.
* ``websocket_availability``: share of the clock samples at which the venue's streams were up (the
  newest market data younger than `SloConfig.ws_fresh_ms`, and in exchange modes the broker healthy,
  which requires its user-data websocket).
* ``gate_error_rate``: share of the signals the gate (risk guard) refused for a fault of the system
  (`GATE_ERROR_REASONS`: a venue or output down, stale data, a malformed signal) rather than by policy
  (kill switch, loss limits, open positions).
* ``maker_fill_ratio``: mean filled share (filled_qty / qty) of the maker (LIMIT) entry orders that ended.
* ``insufficient_balance_rate``: share of the orders answered that were rejected for balance or margin
  (Binance -2018/-2019).

p95 is the nearest rank (the ceil(0.95 n)-th smallest sample), so a test computes it by hand. A window
without samples of an SLI has no value: it neither breaches nor counts as met (and ends a breach streak,
`SloMonitor.breached_windows`, which the alert `TapeflowExecutionSloBreached` reads at 3).

Degradation rules (`RULES`, the plan's): the maker fill ratio below 0.25 over the last hour (12 windows)
sets ``market_only``; the round-trip p95 of the last window above 500 ms sets ``no_twap_no_maker``. They
are evaluated when a window closes. Hysteresis: a rule clears only once its SLI is back past a second
threshold (0.35, 400 ms) with at least `min_samples` samples, so a value hovering at the trigger does not
flap. The maker rule also clears after a full hour without any maker order: market-only sends none, so
its SLI cannot recover on its own; the next entries test the venue again and it re-triggers if the
ratio is still low. Each change is a `DegradationChange` (time, rule, value, threshold) the service
logs, counts and audits (`execution_degradations`, shown on the UI's trades page).

Clocks: the service runs a monitor on the wall clock (what it measures is mostly the process). The
maker rule is about the market: paper and the backtest run it on event time, in an instance fed only
the executor's maker entries (``execution.maker_fill_rule``), and route by it; testnet and live route by
the wall-clock monitor's flags.

Why hand-rolled: the windows are a few counters and sample lists; a metrics library would hold the
samples in a wall-clock registry, and the backtest and tests need the monitor on their own clocks.
"""

from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from execution.degradation import NONE, DegradationFlags

SLIS = (
    "order_round_trip_p95_ms",
    "stream_lag_p95_ms",
    "websocket_availability",
    "gate_error_rate",
    "maker_fill_ratio",
    "insufficient_balance_rate",
)

#: gate (risk guard) refusals caused by a fault of the system; the other reasons are policy
GATE_ERROR_REASONS = frozenset(
    {
        "exchange_down",
        "output_unavailable",
        "not_sole_writer",
        "stale_market_data",
        "stale_signal",
        "invalid_signal",
        "sizing",
    }
)
#: an order rejected for balance or margin: Binance futures -2018 (balance) and -2019 (margin), or a
#: broker's reason saying so
_INSUFFICIENT = re.compile(r"binance -201[89]\b|insufficient", re.IGNORECASE)
_TERMINAL = frozenset({"FILLED", "CANCELED", "REJECTED", "EXPIRED"})


@dataclass(frozen=True, slots=True)
class Objective:
    """An SLO: the SLI must stay at or under `limit` (`bad_above`) or at or over it."""

    sli: str
    limit: float
    bad_above: bool

    def breached(self, value: float | None) -> bool:
        if value is None:
            return False
        return value > self.limit if self.bad_above else value < self.limit


@dataclass(frozen=True, slots=True)
class DegradationRule:
    """Set `flag` when the SLI over the last `windows` windows passes `trigger`; clear it when it is back
    past `clear` (hysteresis), both with at least `min_samples` samples; `clear_when_empty`: also clear
    after `windows` windows without any sample."""

    name: str
    sli: str
    flag: str  # a field of DegradationFlags
    windows: int
    trigger: float
    clear: float
    bad_above: bool
    min_samples: int
    clear_when_empty: bool = False

    def next_state(self, active: bool, value: float | None, samples: int) -> bool:
        if value is None or samples < self.min_samples:
            return False if active and samples == 0 and self.clear_when_empty else active
        if not active:
            return value > self.trigger if self.bad_above else value < self.trigger
        return not (value <= self.clear if self.bad_above else value >= self.clear)


OBJECTIVES = (
    Objective("order_round_trip_p95_ms", 500.0, True),
    Objective("stream_lag_p95_ms", 2000.0, True),
    Objective("websocket_availability", 0.995, False),
    Objective("gate_error_rate", 0.05, True),
    Objective("maker_fill_ratio", 0.25, False),
    Objective("insufficient_balance_rate", 0.01, True),
)
RULES = (
    DegradationRule("maker_fill_ratio_low", "maker_fill_ratio", "market_only", 12, 0.25, 0.35, False, 4, True),
    DegradationRule("round_trip_slow", "order_round_trip_p95_ms", "no_twap_no_maker", 1, 500.0, 400.0, True, 3),
)


@dataclass(frozen=True)
class SloConfig:
    window_ms: int = 300_000
    alert_windows: int = 3  # consecutive breached windows before the alert (deploy/prometheus/alerts.yml)
    ws_fresh_ms: int = 5_000  # market data older than this counts as the stream being down
    objectives: tuple[Objective, ...] = OBJECTIVES
    rules: tuple[DegradationRule, ...] = RULES


@dataclass
class _Window:
    """The samples of one window [start, start + window_ms)."""

    start: int
    round_trips: list[float] = field(default_factory=list)
    lags: list[float] = field(default_factory=list)
    ws_up: int = 0
    ws_total: int = 0
    gate_errors: int = 0
    gate_total: int = 0
    maker_filled: float = 0.0
    maker_orders: int = 0
    balance_rejects: int = 0
    answered: int = 0


def p95(samples: Sequence[float]) -> float | None:
    """Nearest-rank p95: the ceil(0.95 n)-th smallest sample; None without samples."""
    if not samples:
        return None
    return sorted(samples)[math.ceil(0.95 * len(samples)) - 1]


def _ratio(num: float, den: int) -> float | None:
    return num / den if den else None


def sli_values(windows: Iterable[_Window]) -> dict[str, tuple[float | None, int]]:
    """Each SLI over `windows` together: (value or None, sample count)."""
    ws = list(windows)
    rts = [x for w in ws for x in w.round_trips]
    lags = [x for w in ws for x in w.lags]
    up, total = sum(w.ws_up for w in ws), sum(w.ws_total for w in ws)
    gerr, gtot = sum(w.gate_errors for w in ws), sum(w.gate_total for w in ws)
    mfill, mnum = sum(w.maker_filled for w in ws), sum(w.maker_orders for w in ws)
    brej, ans = sum(w.balance_rejects for w in ws), sum(w.answered for w in ws)
    return {
        "order_round_trip_p95_ms": (p95(rts), len(rts)),
        "stream_lag_p95_ms": (p95(lags), len(lags)),
        "websocket_availability": (_ratio(up, total), total),
        "gate_error_rate": (_ratio(gerr, gtot), gtot),
        "maker_fill_ratio": (_ratio(mfill, mnum), mnum),
        "insufficient_balance_rate": (_ratio(brej, ans), ans),
    }


@dataclass(frozen=True, slots=True)
class WindowResult:
    """One closed window: each SLI's value (None: no sample) and which objectives it breached."""

    start_ms: int
    end_ms: int
    values: Mapping[str, float | None]
    samples: Mapping[str, int]
    breached: frozenset[str]


@dataclass(frozen=True, slots=True)
class DegradationChange:
    """A rule set (`active`) or cleared at `time_ms` (the end of the window that decided it), with the
    SLI value over the rule's windows and the threshold it passed (trigger when set, clear when cleared)."""

    time_ms: int
    rule: str
    sli: str
    active: bool
    value: float | None
    threshold: float
    samples: int
    flags: DegradationFlags  # in force after the change

    def describe(self) -> str:
        shown = "no sample" if self.value is None else f"{self.value:.4g}"
        verb = "set" if self.active else "cleared"
        return f"{self.rule} {verb}: {self.sli} {shown} over {self.samples} samples (threshold {self.threshold:g})"


def is_gate_error(allowed: bool, reason: str) -> bool:
    return not allowed and reason in GATE_ERROR_REASONS


def is_insufficient_balance(state: str, reason: str | None) -> bool:
    return state == "REJECTED" and reason is not None and _INSUFFICIENT.search(reason) is not None


def maker_fill(record: Mapping[str, Any]) -> float | None:
    """The filled share of a maker (LIMIT) entry order that ended, from its orders record (the
    ``maker_fill_ratio`` sample); None for any other record (another leg or type, not ended, no qty)."""
    if record["leg"] != "entry" or record["type"] != "LIMIT" or record["state"] not in _TERMINAL:
        return None
    qty = float(record["qty"])
    return float(record["filled_qty"] or 0.0) / qty if qty > 0 else None


class SloMonitor:
    """The SLIs of the current window, the closed windows the rules look back over, breach streaks and
    the degradation flags. Feed it observations and `advance` it with the same clock; `flags` is what the
    order router reads. `active`: rule names in force at start (a restart restoring the audited state)."""

    def __init__(self, now_ms: int, config: SloConfig | None = None, active: Iterable[str] = ()) -> None:
        self.config = config or SloConfig()
        self._open = _Window(self._start(now_ms))
        self._history: deque[_Window] = deque(maxlen=max((r.windows for r in self.config.rules), default=1))
        self.breached_windows = {o.sli: 0 for o in self.config.objectives}
        self.last: WindowResult | None = None
        names = {r.name for r in self.config.rules}
        self.active = frozenset(a for a in active if a in names)
        self._changes: list[DegradationChange] = []
        self._sent: dict[str, int] = {}  # client order id -> send time, until its first answer
        self.flags = self._flags()

    # ------------------------------------------------------------------ observations
    def round_trip(self, ms: float, now_ms: int) -> None:
        self._window(now_ms).round_trips.append(max(0.0, ms))

    def stream_lag(self, ms: float, now_ms: int) -> None:
        self._window(now_ms).lags.append(max(0.0, ms))

    def websocket(self, up: bool, now_ms: int) -> None:
        w = self._window(now_ms)
        w.ws_total += 1
        w.ws_up += up

    def gate(self, error: bool, now_ms: int) -> None:
        w = self._window(now_ms)
        w.gate_total += 1
        w.gate_errors += error

    def maker_order(self, filled_ratio: float, now_ms: int) -> None:
        w = self._window(now_ms)
        w.maker_orders += 1
        w.maker_filled += min(1.0, max(0.0, filled_ratio))

    def order_answer(self, insufficient_balance: bool, now_ms: int) -> None:
        w = self._window(now_ms)
        w.answered += 1
        w.balance_rejects += insufficient_balance

    def order_record(self, record: Mapping[str, Any], now_ms: int) -> float | None:
        """An order record the executor emitted: PENDING_NEW starts its round trip, the next state of
        the same order ends it (and is its answer); a maker entry (LIMIT) that ended gives its fill ratio.
        Returns the round trip it ended (ms), if any."""
        cid, state = record["client_order_id"], record["state"]
        if state == "PENDING_NEW":
            if len(self._sent) > 10_000:  # never answered (a failure in between): do not grow for ever
                self._sent.clear()
            self._sent[cid] = now_ms
            return None
        sent = self._sent.pop(cid, None)
        round_trip = None
        if sent is not None:
            round_trip = max(0, now_ms - sent)
            self.round_trip(round_trip, now_ms)
            self.order_answer(is_insufficient_balance(state, record.get("reason")), now_ms)
        ratio = maker_fill(record)
        if ratio is not None:
            self.maker_order(ratio, now_ms)
        return round_trip

    def sending(self, now_ms: int) -> None:
        """The orders recorded but not answered go to the broker now (after the sink's barrier, which
        makes their intent durable first): their round trip starts here."""
        for cid in self._sent:
            self._sent[cid] = now_ms

    # ------------------------------------------------------------------ windows
    def advance(self, now_ms: int) -> list[DegradationChange]:
        """Close the windows that ended by `now_ms`; returns the degradation changes since the last call."""
        self._window(now_ms)
        out, self._changes = self._changes, []
        return out

    def current(self) -> dict[str, tuple[float | None, int]]:
        """The SLIs of the open window so far (for a status view; the rules use closed windows only)."""
        return sli_values([self._open])

    def _start(self, t_ms: int) -> int:
        return t_ms - t_ms % self.config.window_ms

    def _window(self, now_ms: int) -> _Window:
        w = self.config.window_ms
        if now_ms >= self._open.start + w:
            start = self._start(now_ms)
            self._close(self._open)
            # empty windows in between: after as many as the longest rule looks back over, another one
            # changes nothing (streaks at 0, history all empty), so a long gap costs that many at most
            gap = (start - self._open.start) // w - 1
            first = start - min(gap, self._history.maxlen or 1) * w
            for s in range(first, start, w):
                self._close(_Window(s))
            self._open = _Window(start)
        return self._open

    def _close(self, window: _Window) -> None:
        end = window.start + self.config.window_ms
        values = sli_values([window])
        breached = frozenset(o.sli for o in self.config.objectives if o.breached(values[o.sli][0]))
        for o in self.config.objectives:
            self.breached_windows[o.sli] = self.breached_windows[o.sli] + 1 if o.sli in breached else 0
        self.last = WindowResult(
            window.start,
            end,
            {k: v for k, (v, _) in values.items()},
            {k: n for k, (_, n) in values.items()},
            breached,
        )
        self._history.append(window)
        self._evaluate(end)

    def _evaluate(self, end_ms: int) -> None:
        for rule in self.config.rules:
            recent = list(self._history)[-rule.windows :]
            value, samples = sli_values(recent)[rule.sli]
            was = rule.name in self.active
            now = rule.next_state(was, value, samples)
            if now == was:
                continue
            self.active = self.active | {rule.name} if now else self.active - {rule.name}
            self.flags = self._flags()
            threshold = rule.trigger if now else rule.clear
            self._changes.append(
                DegradationChange(end_ms, rule.name, rule.sli, now, value, threshold, samples, self.flags)
            )

    def _flags(self) -> DegradationFlags:
        if not self.active:
            return NONE
        on = {r.flag for r in self.config.rules if r.name in self.active}
        return DegradationFlags(
            market_only="market_only" in on,
            no_twap_no_maker="no_twap_no_maker" in on,
            reason=",".join(sorted(self.active)),
        )


class FlagSchedule:
    """Scripted degradation for a backtest or a test: `steps` of (from time ms, flags), sorted by time;
    called with a time, the flags of the last step at or before it (none before the first)."""

    def __init__(self, steps: Iterable[tuple[int, DegradationFlags]]) -> None:
        self.steps = sorted(steps, key=lambda s: s[0])

    def __call__(self, now_ms: int) -> DegradationFlags:
        flags = NONE
        for t, f in self.steps:
            if t > now_ms:
                break
            flags = f
        return flags
