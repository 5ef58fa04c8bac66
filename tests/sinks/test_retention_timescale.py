"""Retention and compression settings on a real TimescaleDB (PGlite build, served over the protocol).

The configuration becomes the compression jobs; `retention_report` (what `tapeflow db retention`
prints) shows chunks, compressed chunks and jobs; the guarded chunk drop keeps every chunk from
the oldest recently written day on, and drops what is older.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from benchmarks.pglite_timescale import available, migrate_pglite, pglite_timescale
from sinks.retention import (
    apply_compression,
    drop_expired,
    record_writes,
    resolve_policies,
    retention_report,
)
from tapeflow_runtime.settings import TableRetention

pytestmark = [pytest.mark.integration, pytest.mark.skipif(available() is not None, reason=str(available()))]
DAY = timedelta(days=1)


def _trade(conn, agg_id: int, when: datetime) -> None:
    conn.execute(
        "INSERT INTO trades VALUES ('binance','BTCUSDT',%s,100,1,%s,%s,%s,%s,%s,'BUY')",
        (agg_id, agg_id, agg_id, when, when, when),
    )


def test_settings_become_jobs_and_guarded_chunk_drops():
    now = datetime.now(UTC)
    with pglite_timescale() as conninfo:
        migrate_pglite(conninfo)
        with psycopg.connect(conninfo, autocommit=True) as conn:
            assert (
                conn.execute(
                    "SELECT count(*) FROM timescaledb_information.jobs WHERE proc_name = 'policy_retention'"
                ).fetchone()[0]
                == 0
            )
            policies = resolve_policies(
                {
                    "trades": TableRetention(keep="10d", compress_after="3d"),
                    "features": TableRetention(compress_after="never"),
                }
            )
            changed = apply_compression(conn, policies)
            assert changed["trades"] == "compress after 3d" and changed["features"] == "compress after forever"
            assert apply_compression(conn, policies) == {}  # applied once, then it matches
            for i, age in enumerate((40, 30, 20, 5, 0)):  # one chunk (day) each
                _trade(conn, i, now - age * DAY)
            conn.execute(
                "SELECT compress_chunk(c) FROM show_chunks('trades', older_than => %s::timestamptz) c",
                (now - 25 * DAY,),
            )
            record_writes(conn, "trades", [(now - 30 * DAY).date()])  # a backfill just wrote that day

            report = {r.table: r for r in retention_report(conn, policies, now)}
            trades = report["trades"]
            assert (trades.engine, trades.keep, trades.compress_after, trades.source) == (
                "timescaledb",
                "10d",
                "3d",
                "configured",
            )
            assert trades.compression_job == "3d" and report["features"].compression_job == "none"
            assert trades.pieces == 5 and trades.compressed == 2
            assert len(trades.expired) == 1 and len(trades.protected) == 2  # 40 d: gone; 30 d, 20 d: kept
            assert report["bars_1m"].keep == "forever" and report["bars_1m"].compression_job == "30d"

            dropped = drop_expired(conn, policies["trades"], now, now - DAY)
            assert dropped and dropped[0].endswith(trades.expired[0])
            ages = [r[0] for r in conn.execute("SELECT agg_id FROM trades ORDER BY agg_id").fetchall()]
            assert ages == [1, 2, 3, 4]  # only the 40-day-old chunk was dropped (a compressed one)
