"""The executor service's SLOs (`execution.slo`): what it feeds the monitor, and what it does with a
degradation change (a log line, the metrics, a row of `execution_degradations`).

`SloFeed` is the service's side: the market trades handled (stream lag), the gate's decisions on
signals, a websocket sample per clock tick, and each tick closes due windows, publishes the SLIs and
breach streaks as metrics and hands changes to the audit. Order records reach the monitor through the
service's `KafkaSink` (round trips, answers, maker fill ratios). `flags(now_ms)` is what the order router
reads in testnet and live (`ExecutorService._publish_flags`).

Paper routes by the maker rule on event time instead (`execution.maker_fill_rule`, owned by the
executor, the backtest's too): the wall-clock monitor of a paper service has no maker rule
(`wall_clock_config`), and `SloFeed.follow` takes the executor's event-time rule, whose changes each
tick logs, counts and audits like its own (`execution_degradations`, `mode` paper), and whose state the
gauge and `/health` show with the monitor's.

`DegradationAudit` writes the changes to PostgreSQL from its own thread, so a slow or absent database
never holds up the trading loop: a row that cannot be written for want of a connection is retried every
`retry_s` in order (one the database refuses, e.g. before `tapeflow db migrate`, is logged and dropped), and
the queue is bounded (the oldest change is dropped, with a warning, beyond `max_queue`). Every change is
also a log line (`execution degradation set/cleared`), whether or not a database is configured. On
start the service reads each wall-clock rule's last audited state, so a degradation in force survives a
restart (it clears by the rule's hysteresis as usual); the event-time rule comes back from the orders
topic with the executor's state instead (`MakerFillRule.restore`). The insert is idempotent on (mode,
rule, time, active).
"""

from __future__ import annotations

import queue
import threading
from typing import Any

import structlog

from execution.degradation import NONE, DegradationFlags
from execution.maker_fill_rule import MAKER_SLI, MakerFillRule
from execution.metrics import ExecutorMetrics
from execution.slo import DegradationChange, SloConfig, SloMonitor, is_gate_error

log = structlog.get_logger("executor.slo")

INSERT = (
    "INSERT INTO execution_degradations (mode, rule, changed_time, active, sli, value, threshold, samples,"
    " market_only, no_twap_no_maker, detail) VALUES (%s, %s, to_timestamp(%s / 1000.0), %s, %s, %s, %s, %s, %s, %s, %s)"
    " ON CONFLICT DO NOTHING"
)
LAST_STATE = (
    "SELECT DISTINCT ON (rule) rule, active FROM execution_degradations WHERE mode = %s"
    " ORDER BY rule, changed_time DESC, active"
)


def wall_clock_config(mode: str) -> SloConfig:
    """The service's wall-clock monitor's config: paper leaves the maker rule to its executor's event
    time (`execution.maker_fill_rule`), so the two never set the same rule; other modes keep every rule."""
    config = SloConfig()
    if mode != "paper":
        return config
    return SloConfig(rules=tuple(r for r in config.rules if r.sli != MAKER_SLI))


def merged(a: DegradationFlags, b: DegradationFlags) -> DegradationFlags:
    """The degradations of two sources together (their reasons' rule names, sorted)."""
    if not b.degraded:
        return a
    if not a.degraded:
        return b
    reason = ",".join(sorted({*a.reason.split(","), *b.reason.split(",")} - {""}))
    return DegradationFlags(a.market_only or b.market_only, a.no_twap_no_maker or b.no_twap_no_maker, reason)


def change_row(mode: str, change: DegradationChange) -> tuple[Any, ...]:
    return (
        mode,
        change.rule,
        change.time_ms,
        change.active,
        change.sli,
        change.value,
        change.threshold,
        change.samples,
        change.flags.market_only,
        change.flags.no_twap_no_maker,
        change.describe(),
    )


class DegradationAudit:
    """Rows of `execution_degradations` written from a daemon thread (module docstring); `conninfo`
    None: log lines only."""

    def __init__(
        self,
        conninfo: str | None,
        mode: str,
        *,
        retry_s: float = 5.0,
        max_queue: int = 1000,
        connect_timeout_s: int = 5,
    ) -> None:
        self.conninfo = conninfo
        self.mode = mode
        self.retry_s = retry_s
        self.connect_timeout_s = connect_timeout_s
        self.written = 0
        self._queue: queue.Queue[DegradationChange | None] = queue.Queue(maxsize=max_queue)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if conninfo is not None:
            self._thread = threading.Thread(target=self._run, name="degradation-audit", daemon=True)
            self._thread.start()

    def last_active(self) -> list[str]:
        """The rules whose last audited change set them ([] without a database or when it cannot answer)."""
        if self.conninfo is None:
            return []
        import psycopg

        try:
            with psycopg.connect(self.conninfo, connect_timeout=self.connect_timeout_s) as conn:
                rows = conn.execute(LAST_STATE, (self.mode,)).fetchall()
        except psycopg.Error as exc:
            log.warning("degradation state not restored: database unavailable", error=str(exc))
            return []
        return [rule for rule, active in rows if active]

    def record(self, change: DegradationChange) -> None:
        if self._thread is None:
            return
        while True:
            try:
                self._queue.put_nowait(change)
                return
            except queue.Full:
                try:
                    lost = self._queue.get_nowait()
                    log.warning("degradation audit queue full: oldest change not written", change=repr(lost))
                except queue.Empty:
                    pass

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the writer after what is queued (waiting at most `timeout_s`)."""
        if self._thread is None:
            return
        self._stop.set()
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass
        self._thread.join(timeout_s)

    def _run(self) -> None:
        import psycopg

        conninfo = str(self.conninfo)
        conn: Any = None
        pending: DegradationChange | None = None
        while True:
            if pending is None:
                pending = self._queue.get()
                if pending is None:
                    break
            change = pending
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(conninfo, autocommit=True, connect_timeout=self.connect_timeout_s)
                conn.execute(INSERT, change_row(self.mode, change))
                self.written += 1
                pending = None
            except psycopg.OperationalError as exc:  # the database away: retried in order
                log.warning("degradation change not audited yet: retrying", error=str(exc), rule=change.rule)
                if conn is not None:
                    conn.close()
                conn = None
                if self._stop.wait(self.retry_s):
                    break
            except psycopg.Error as exc:  # refused for good (the table not migrated yet): logged, dropped
                log.error("degradation change not audited", error=str(exc), change=change.describe())
                pending = None
        if conn is not None:
            conn.close()


class SloFeed:
    """The service's SLO monitor with its outputs (module docstring)."""

    def __init__(self, monitor: SloMonitor, metrics: ExecutorMetrics, audit: DegradationAudit, mode: str) -> None:
        self.monitor = monitor
        self.metrics = metrics
        self.audit = audit
        self.mode = mode
        self.rule: MakerFillRule | None = None  # paper: the executor's event-time maker rule (`follow`)
        metrics.set_degradation(monitor.active)

    def follow(self, rule: MakerFillRule | None) -> None:
        """The event-time rule of the executor of a new assignment (its state restored with it)."""
        self.rule = rule
        self.metrics.set_degradation(self.active())

    def active(self) -> frozenset[str]:
        """The rules in force, of both sources."""
        return self.monitor.active | (self.rule.active if self.rule is not None else frozenset())

    def flags(self, now_ms: int | None = None) -> DegradationFlags:
        """The degradations in force, of both sources (what `/health` shows; testnet/live hand it to the
        router: no event-time rule there); the time is the caller's, unused: the wall-clock flags change
        only when a window closes, on the service's clock tick."""
        return merged(self.monitor.flags, self.rule.flags if self.rule is not None else NONE)

    def trade(self, record: dict[str, Any], now_ms: int) -> None:
        lag_ms = now_ms - int(record["event_time"])
        self.monitor.stream_lag(lag_ms, now_ms)
        self.metrics.stream_lag.observe(max(0.0, lag_ms / 1000))

    def signal(self, allowed: bool, reason: str, now_ms: int) -> None:
        self.monitor.gate(is_gate_error(allowed, reason), now_ms)

    def tick(self, now_ms: int, ws_up: bool | None) -> None:
        """A clock tick: a websocket sample (None: nothing to judge yet), due windows closed."""
        if ws_up is not None:
            self.monitor.websocket(ws_up, now_ms)
        changes = self.monitor.advance(now_ms)
        if self.monitor.last is not None:
            self.metrics.set_slo(self.monitor.last, self.monitor.breached_windows)
        if self.rule is not None:  # the event-time rule's changes since the last tick
            changes += self.rule.take_changes()
        for change in changes:
            self._changed(change)

    def _changed(self, change: DegradationChange) -> None:
        (log.warning if change.active else log.info)(
            "execution degradation " + ("set" if change.active else "cleared"),
            mode=self.mode,
            rule=change.rule,
            sli=change.sli,
            value=change.value,
            threshold=change.threshold,
            samples=change.samples,
            market_only=change.flags.market_only,
            no_twap_no_maker=change.flags.no_twap_no_maker,
            at=change.time_ms,
        )
        self.metrics.set_degradation(self.active())
        self.metrics.degradation_changes.labels(change.rule, "set" if change.active else "cleared").inc()
        self.audit.record(change)
