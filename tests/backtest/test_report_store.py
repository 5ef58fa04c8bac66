"""A run stored in the real PostgreSQL (tests/conftest.py) and read back: one row per strategy, idempotent."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import psycopg
import pytest

from backtest.report import document, store_run
from tests.support.backtest_runs import DAY, HOUR, T0, make_run

pytestmark = pytest.mark.integration


@pytest.fixture
def db(migrated_database) -> str:
    return migrated_database


def _runs(conn):
    cols = (
        "run_id",
        "run_group",
        "strategy",
        "config_hash",
        "status",
        "partial",
        "trades",
        "wins",
        "losses",
        "win_rate",
        "gross_r",
        "fees_r",
        "slippage_r",
        "funding_r",
        "net_r",
        "expectancy_r",
        "profit_factor",
        "max_drawdown_r",
        "sharpe",
        "sharpe_per_day",
        "final_balance",
        "symbols",
        "from_time",
        "to_time",
        "evaluations",
        "report",
    )
    rows = conn.execute(f"SELECT {', '.join(cols)} FROM backtest_runs ORDER BY run_id").fetchall()
    return [dict(zip(cols, r, strict=True)) for r in rows]


def _close(stored: Decimal | float | None, computed: float | None) -> bool:
    if computed is None:
        return stored is None
    return float(stored) == pytest.approx(computed, rel=1e-12, abs=1e-12)


def test_store_and_read_back_one_row_per_strategy(db):
    run = make_run()
    store_run(run, db)
    doc = document.build(run)
    with psycopg.connect(db) as conn:
        runs = _runs(conn)
        assert [r["run_id"] for r in runs] == ["bt-20240301-demo:v53", "bt-20240301-demo:v54_tight"]
        for row, s in zip(runs, doc["strategies"], strict=True):
            m = s["summary"]
            assert (row["run_group"], row["strategy"], row["config_hash"], row["status"], row["partial"]) == (
                run.run_id,
                s["name"],
                s["config_hash"],
                "finished",
                False,
            )
            assert (row["trades"], row["wins"], row["losses"]) == (m["trades"], m["wins"], m["losses"])
            for col, key in [
                ("gross_r", "gross_r"),
                ("fees_r", "fees_r"),
                ("slippage_r", "slippage_r"),
                ("funding_r", "funding_r"),
                ("net_r", "net_r"),
                ("expectancy_r", "expectancy_r"),
                ("profit_factor", "profit_factor"),
                ("max_drawdown_r", "max_drawdown_r"),
                ("sharpe", "sharpe_annualised"),
                ("sharpe_per_day", "sharpe_per_day"),
                ("win_rate", "win_rate"),
                ("final_balance", "final_balance"),
            ]:
                assert _close(row[col], m[key]), col
            assert row["symbols"] == ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
            assert row["from_time"] == datetime.fromtimestamp(T0 / 1000, UTC)
            assert row["to_time"] == datetime.fromtimestamp((T0 + 3 * DAY) / 1000, UTC)
            assert row["evaluations"] == run.evaluations
            # the jsonb report holds this strategy's breakdowns only, and the run's coverage
            assert {r["strategy"] for r in row["report"]["breakdowns"]["symbol"]} == {s["name"]}
            assert len(row["report"]["coverage"]) == len(run.coverage)
        trades = conn.execute(
            "SELECT run_id, position_id, entry_time, funding_r, pnl_r_net, pnl_usd_net FROM backtest_trades"
        ).fetchall()
        assert len(trades) == len(run.trades)
        by_id = {t.position_id: t for t in run.trades}
        for run_id, pid, entry_time, funding_r, net, usd in trades:
            t = by_id[pid]
            assert run_id == f"{run.run_id}:{t.strategy}"
            assert entry_time == datetime.fromtimestamp(t.entry_time / 1000, UTC)
            assert _close(funding_r, t.funding_r) and _close(net, t.pnl_r_net)
            assert float(usd) == pytest.approx(t.pnl_usd_net, rel=1e-12)
        funded = conn.execute("SELECT funding_r FROM backtest_trades WHERE position_id = 'v53:funded'").fetchone()[0]
        assert funded == Decimal("0.025")
        # per strategy, the trades add up to the run row
        sums = dict(conn.execute("SELECT run_id, sum(pnl_r_net) FROM backtest_trades GROUP BY run_id").fetchall())
        for row in runs:
            assert float(sums[row["run_id"]]) == pytest.approx(float(row["net_r"]), abs=1e-9)


def test_storing_again_replaces_the_run_partial_then_finished(db):
    partial = make_run(partial=True)
    store_run(partial, db)
    store_run(partial, db)  # the same run twice: one copy
    with psycopg.connect(db) as conn:
        assert [r["partial"] for r in _runs(conn)] == [True, True]
        assert conn.execute("SELECT count(*) FROM backtest_trades").fetchone()[0] == len(partial.trades)
        latest = conn.execute("SELECT max(exit_time) FROM backtest_trades").fetchone()[0]
        assert latest <= datetime.fromtimestamp((T0 + DAY + 13 * HOUR) / 1000, UTC)

    full = make_run(strategies=("v53",))  # finished, and with one strategy: the other row goes too
    store_run(full, db)
    other = make_run(run_id="another-run")
    store_run(other, db)
    with psycopg.connect(db) as conn:
        groups = conn.execute(
            "SELECT run_group, count(*), bool_or(partial) FROM backtest_runs GROUP BY run_group ORDER BY run_group"
        ).fetchall()
        assert groups == [("another-run", 2, False), ("bt-20240301-demo", 1, False)]
        n = conn.execute("SELECT count(*) FROM backtest_trades WHERE run_id LIKE 'bt-20240301-demo:%'").fetchone()[0]
        assert n == len(full.trades)
