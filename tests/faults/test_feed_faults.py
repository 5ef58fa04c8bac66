"""Fault suite, exchange-feed faults: the real producer process against the fake exchange
process (a live session), into the real broker, with the real sink into the real PostgreSQL.

One run takes every feed fault in sequence (tests/support/faults_feed.py): a 418 IP ban met by the
start-up burst, a depth gap (`pu` mismatch), duplicated frames on every stream, out-of-order
aggTrades, a 1006 close, a TCP reset, a 429 met by a gap fill, a 3 s stall of the whole feed and a
half-open connection only the read timeout can detect. Each must show in the producer's metrics while
it lasts and data must flow again within 30 s of it clearing; over the whole run every trade the
exchange produced is in `md.trades` and in the `trades` table exactly once, the published depth chain
breaks only where the book resynced, and no REST request reached the exchange inside a ban window.
"""

from __future__ import annotations

import pytest

from sinks.migrate import migrate
from tests.support.faults_feed import RECOVER_LIMIT_S, feed_faults

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


def test_feed_faults_lose_nothing_duplicate_nothing_and_recover(kafka_bootstrap, database, tmp_path):
    migrate(database)
    rows = feed_faults(kafka_bootstrap, tmp_path / "feed", fault_s=3.0, database=database)
    run = rows[0]["detail"]["run"]
    whole = [r for r in rows if r["fault"].startswith("feed_run:")]
    rows = [r for r in rows if not r["fault"].startswith("feed_run:")]
    by_fault = {r["fault"]: r for r in rows}
    table = "\n".join(
        f"{r['fault']:>20} lasted {r['duration_s']:>5} s, trades {r['trades_in']:>4} in "
        f"{r['trades_out']:>4} out, dup {r['duplicates']}, lost {r['lost']}, recover {r['recover_s']} s, "
        f"shown {r['detail']['shown']}"
        for r in rows
    )
    print("\n" + table + f"\nrun: { {k: v for k, v in run.items() if k != 'health_at_end'} }")

    # --- whole run: exactly once through the broker and the database -------------------------------------
    assert run["exit_code"] == 0, run["summary"]
    assert all(run["owed_reached"].values()), run  # the producer delivered what the exchange played
    assert run["missing_count"] == 0 and run["duplicates"] == 0 and not run["unexpected"], run
    assert run["distinct"] == run["expected"] > 500
    assert run["db_rows"] == run["expected"] and run["db_duplicates"] == 0 and run["db_missing"] == 0, run
    assert [(r["trades_in"] - r["trades_out"], r["duplicates"], r["lost"]) for r in whole] == [(0, 0, 0)] * 2
    assert not run["gaps_line"], run["gaps_line"]  # every hole filled, none given up
    # the depth chain published is verified: it breaks only where the book resynced (and reconnected)
    assert sum(run["depth_breaks"].values()) <= run["resyncs_logged"], run
    # Retry-After honoured by every client of the process: nothing sent inside a ban window
    assert run["requests_in_ban"] == 0, run

    # --- per fault: nothing lost or twice in its window, shown while it lasts, recovered in time -------
    for r in rows:
        assert r["lost"] == 0 and r["duplicates"] == 0 and r["trades_in"] > 0, r["fault"]
        assert r["recover_s"] is not None and r["recover_s"] <= RECOVER_LIMIT_S, (r["fault"], r["recover_s"])
    shown = {name: r["detail"]["shown"] for name, r in by_fault.items()}
    assert shown["rest_418_ban"]["rest_backoffs_418"] >= 1
    assert shown["rest_429"]["rest_backoffs_429"] >= 1 and shown["rest_429"]["gaps_open"] >= 1
    assert shown["depth_gap"]["book_resyncs"] >= 1
    assert shown["duplicate_frames"]["duplicates_dropped"] >= 1
    assert shown["out_of_order_frames"]["gaps_detected"] >= 1
    # ...and the stream closes those holes itself: no REST weight spent on each (a REST fill per swapped
    # pair used to exhaust the weight budget over 30 s and stall the next real gap fill for ~30 s)
    ooo = by_fault["out_of_order_frames"]["detail"]
    assert ooo["rest_requests"] <= ooo["reordered"] // 2, ooo
    assert shown["ws_close_1006"]["reconnects"] >= 1 and shown["tcp_reset"]["reconnects"] >= 1
    assert shown["feed_stall"]["trade_age_s"] >= 1.5  # of 3 s (the gauge is refreshed every second)
    assert shown["ws_half_open"]["trade_age_s"] >= 5 and shown["ws_half_open"]["reconnects"] >= 1
    assert by_fault["rest_418_ban"]["detail"]["requests_in_ban"] == 0
    assert by_fault["rest_429"]["detail"]["requests_in_ban"] == 0
