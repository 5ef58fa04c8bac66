"""The sink's maintenance job, beside the write path: partitions ahead (plain PostgreSQL), retention,
the compaction of the days the sink wrote into `trade_levels_1m`, and that table's backfill of days
stored before it existed. At the sink's start and hourly, never per batch: a batch only makes the
partitions it reaches into (`sinks.writer`).

Retention never drops a day the sink wrote since it started (`protect_since`), so a replay of old
days is not deleted under the sink that is storing it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import structlog

from sinks.partitions import ensure_partitions_ahead
from sinks.retention import RetentionPolicy, apply_retention, protect_since
from sinks.trade_levels import backfill_pending, compact_written_days, pending_days

log = structlog.get_logger("sink")

INTERVAL_S = 3600.0


class SinkMaintenance:
    """One sink's maintenance: `run` at start and every `INTERVAL_S`; the backfill in a thread of its own."""

    def __init__(
        self,
        conninfo: str,
        connect_kwargs: dict[str, Any],
        retention: dict[str, RetentionPolicy] | None,
        *,
        writes_trades: bool,
        started_at: Callable[[], datetime],
        stopping: Callable[[], bool],
        partitions_dropped: Callable[[], None],
    ) -> None:
        self.conninfo = conninfo
        self._connect_kwargs = connect_kwargs
        self.retention = retention
        self.writes_trades = writes_trades  # the sink that writes trades compacts their levels (others would repeat it)
        self._started_at = started_at
        self._stopping = stopping
        self._dropped = partitions_dropped  # the writers re-learn which partitions exist
        self._last: datetime | None = None
        self._backfill: threading.Thread | None = None

    def run(self) -> None:
        now = datetime.now(UTC)
        try:
            with psycopg.connect(self.conninfo, autocommit=True, connect_timeout=5, **self._connect_kwargs) as conn:
                created = ensure_partitions_ahead(conn, now)
                dropped = apply_retention(conn, self.retention, now, protect_since(self._started_at(), now))
                # days written since the last run (at start: in the last 2 h, the predecessor's)
                if self.writes_trades:
                    compact_written_days(conn, self._last or self._started_at() - timedelta(hours=2))
                self._last = now
                backfill = bool(pending_days(conn))
            self._dropped()
        except psycopg.Error as exc:  # the batch path retries on its own; maintenance tries again next hour
            log.warning("partition maintenance failed", error=str(exc).splitlines()[0])
            return
        if backfill and (self._backfill is None or not self._backfill.is_alive()):
            self._backfill = threading.Thread(
                target=self._backfill_trade_levels, name="sink-trade-levels-backfill", daemon=True
            )
            self._backfill.start()
        new = sum(len(v) for v in created.values())
        gone = sum(len(v) for v in dropped.values())
        if new or gone:
            log.info(
                "partition maintenance",
                created=new,
                dropped=gone,
                dropped_tables={t: len(v) for t, v in dropped.items() if v},
            )

    def _backfill_trade_levels(self) -> None:
        """The days of trades stored before `trade_levels_1m` existed, one transaction each, beside the
        consumer (a big history takes minutes; the consumer and its writers keep going, a writer into
        the day being summed waits for that day only)."""
        try:
            with psycopg.connect(self.conninfo, autocommit=True, connect_timeout=5, **self._connect_kwargs) as conn:
                done = backfill_pending(conn, self._stopping)
            if done:
                log.info("trade_levels_1m backfilled", days=done)
        except psycopg.Error as exc:  # tried again at the next run; the UI reads trades meanwhile
            log.warning("trade_levels_1m backfill failed", error=str(exc).splitlines()[0])
