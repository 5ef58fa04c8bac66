"""Store a backtest run in `backtest_runs` (one row per strategy) and `backtest_trades`.

Why one row per strategy: the table's identity and headline columns (strategy, version,
config_hash, config, net R, drawdown, Sharpe) describe one strategy, and an A/B run's strategies are
alternatives whose numbers must not be summed into one row. Each row's run_id is
`<run id>:<strategy>`; `run_group` (migration 0006) holds the run id itself. Storing is idempotent:
one transaction deletes the group's rows (their trades cascade) and inserts them again, so storing a
partial run and then the finished one, or the same run twice, leaves exactly one copy. The database
must be migrated (`tapeflow db migrate`; the stack does it at start).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg
from psycopg.types.json import Jsonb

from backtest.model import BacktestTrade, RunResult
from backtest.report import document


def _ts(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _jsonb(obj: Any) -> Jsonb:
    return Jsonb(obj, dumps=lambda o: orjson.dumps(o, option=orjson.OPT_NON_STR_KEYS, default=str).decode())


def strategy_run_id(run_id: str, strategy: str) -> str:
    return f"{run_id}:{strategy}"


_RUN_COLUMNS = (
    "run_id",
    "run_group",
    "strategy",
    "strategy_version",
    "config_hash",
    "config",
    "source",
    "exchange",
    "symbols",
    "from_time",
    "to_time",
    "params",
    "status",
    "started_at",
    "finished_at",
    "events_processed",
    "evaluations",
    "signals",
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
    "initial_balance",
    "final_balance",
    "report",
)
_TRADE_COLUMNS = (
    "run_id",
    "position_id",
    "signal_id",
    "exchange",
    "symbol",
    "direction",
    "tier",
    "score",
    "entry_time",
    "exit_time",
    "entry_price",
    "exit_price",
    "sl_price",
    "tp1_price",
    "tp2_price",
    "risk_distance",
    "exit_reason",
    "tp1_hit",
    "r_usd",
    "pnl_r_gross",
    "pnl_r_net",
    "fees_r",
    "slippage_r",
    "funding_r",
    "pnl_usd_net",
)


def _insert(table: str, columns: tuple[str, ...]) -> str:
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))})"  # nosec B608 # table and column names are this module's constants; values are bound


def _strategy_report(doc: dict[str, Any], strategy: dict[str, Any]) -> dict[str, Any]:
    """The report jsonb of one strategy's row: its summary and breakdowns plus the run's coverage."""
    name = strategy["name"]
    return {
        "format": doc["format"],
        "format_version": doc["format_version"],
        "run": doc["run"],
        "summary": strategy["summary"],
        "daily": strategy["daily"],
        "breakdowns": {dim: [r for r in rows if r["strategy"] == name] for dim, rows in doc["breakdowns"].items()},
        "coverage": doc["coverage"],
        "coverage_incomplete": doc["coverage_incomplete"],
        "evaluations_lacking_inputs": doc["evaluations_lacking_inputs"],
        "missing": doc["missing"],
        "bad_rows": doc["bad_rows"],
        "definitions": doc["definitions"],
    }


def _run_row(result: RunResult, doc: dict[str, Any], s: dict[str, Any]) -> tuple[Any, ...]:
    """One strategy's `backtest_runs` row, in `_RUN_COLUMNS` order."""
    m = s["summary"]
    return (
        strategy_run_id(result.run_id, s["name"]),
        result.run_id,
        s["name"],
        s["version"],
        s["config_hash"],
        _jsonb(s["config"]),
        result.source,
        result.exchange,
        list(result.symbols),
        _ts(result.from_ms),
        _ts(result.to_ms),
        _jsonb(result.params),
        "finished",
        _ts(result.started_at_ms),
        _ts(result.finished_at_ms),
        result.events_processed,
        result.evaluations,
        result.signals,
        result.partial,
        m["trades"],
        m["wins"],
        m["losses"],
        m["win_rate"],
        m["gross_r"],
        m["fees_r"],
        m["slippage_r"],
        m["funding_r"],
        m["net_r"],
        m["expectancy_r"],
        m["profit_factor"],
        m["max_drawdown_r"],
        m["sharpe_annualised"],
        m["sharpe_per_day"],
        result.initial_balance,
        m["final_balance"],
        _jsonb(_strategy_report(doc, s)),
    )


def _trade_row(result: RunResult, t: BacktestTrade) -> tuple[Any, ...]:
    """One trade's `backtest_trades` row, in `_TRADE_COLUMNS` order."""
    return (
        strategy_run_id(result.run_id, t.strategy),
        t.position_id,
        t.signal_id,
        t.exchange,
        t.symbol,
        t.direction,
        t.tier,
        t.score,
        _ts(t.entry_time),
        _ts(t.exit_time),
        t.entry_price,
        t.exit_price,
        t.sl_price,
        t.tp1_price,
        t.tp2_price,
        t.risk_distance,
        t.exit_reason,
        t.tp1_hit,
        t.r_usd,
        t.pnl_r_gross,
        t.pnl_r_net,
        t.fees_r,
        t.slippage_r,
        t.funding_r,
        t.pnl_usd_net,
    )


def store_run(result: RunResult, conninfo: str) -> None:
    """Insert (or replace) the run's rows, one `backtest_runs` row per strategy, in one transaction."""
    doc = document.build(result)
    run_rows = [_run_row(result, doc, s) for s in doc["strategies"]]
    trade_rows = [_trade_row(result, t) for t in result.trades]
    with psycopg.connect(conninfo) as conn, conn.transaction(), conn.cursor() as cur:
        cur.execute(
            "DELETE FROM backtest_runs WHERE run_group = %s OR run_id = ANY(%s)",
            (result.run_id, [r[0] for r in run_rows]),
        )
        cur.executemany(_insert("backtest_runs", _RUN_COLUMNS), run_rows)
        cur.executemany(_insert("backtest_trades", _TRADE_COLUMNS), trade_rows)
