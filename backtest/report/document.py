"""The report of one run as one JSON-able document; every output format renders from it.

Why: the JSON file, the Markdown, the PNG, the HTML page and the database row must not disagree, so
the numbers are computed once (backtest.metrics) and laid out once, here, with stable keys
(`FORMAT_VERSION` changes only when a key is renamed or removed; adding keys keeps it).
Times appear both as Unix milliseconds (`*_ms`) and as ISO 8601 UTC strings.
"""

from __future__ import annotations

from dataclasses import fields
from datetime import UTC, datetime
from typing import Any

from backtest import metrics
from backtest.model import BacktestTrade, RunResult, StrategyInfo
from backtest.routed_orders import tca_section

FORMAT = "tapeflow-backtest-report"
FORMAT_VERSION = 1
BREAKDOWN_DIMENSIONS = ("strategy", "symbol", "tier", "utc_hour", "exit_reason", "score_band")
BREAKDOWN_TITLES = {
    "strategy": "Strategy",
    "symbol": "Symbol",
    "tier": "Tier",
    "utc_hour": "UTC hour (entry)",
    "exit_reason": "Exit reason",
    "score_band": "Score band",
}


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


_TRADE_FIELDS = tuple(f.name for f in fields(BacktestTrade))


def trade_row(t: BacktestTrade) -> dict[str, Any]:
    # the fields read directly: dataclasses.asdict deep-copies and was most of the report's time
    d = {name: getattr(t, name) for name in _TRADE_FIELDS}
    d.update(
        pnl_usd_net=t.pnl_usd_net,
        entry_iso=iso(t.entry_time),
        exit_iso=iso(t.exit_time),
        duration_min=(t.exit_time - t.entry_time) / 60_000,
        gross_usd=t.pnl_r_gross * t.r_usd,
        fees_usd=t.fees_r * t.r_usd,
        slippage_usd=t.slippage_r * t.r_usd,
        funding_usd=t.funding_r * t.r_usd,
        utc_hour=metrics.utc_hour(t),
        score_band=metrics.score_band(t),
    )
    return d


def _curve(trades: list[BacktestTrade], from_ms: int) -> dict[str, list]:
    """Equity and drawdown after each trade, preceded by the starting point (from_ms, 0, 0)."""
    net = [t.pnl_r_net for t in trades]
    equity = metrics.equity_curve(net)
    return {
        "time_ms": [from_ms] + [t.exit_time for t in trades],
        "equity_r": [0.0] + equity,
        "drawdown_r": [0.0] + metrics.drawdowns(equity),
    }


def _trades_by_strategy(result: RunResult, trades: list[BacktestTrade]) -> dict[str, list[BacktestTrade]]:
    """The run's trades of each of its strategies; refuses trades of an unknown strategy and duplicate names."""
    names = [s.name for s in result.strategies]
    unknown = sorted({t.strategy for t in trades} - set(names))
    if unknown:
        raise ValueError(f"trades of strategies not in the run: {', '.join(unknown)}")
    if len(set(names)) != len(names):
        raise ValueError("strategy names of a run must be unique")
    return {n: [t for t in trades if t.strategy == n] for n in names}


def _strategy_section(s: StrategyInfo, st: list[BacktestTrade], result: RunResult) -> dict[str, Any]:
    """One strategy's identity, summary (with its daily Sharpe and final balance), daily net R and curve."""
    summary = metrics.summarise(st).as_dict()
    daily = metrics.daily_net_r(st, result.from_ms, result.end_ms)
    sh = metrics.sharpe([r for _d, r in daily])
    summary.update(
        sharpe_per_day=sh.per_day,
        sharpe_annualised=sh.annualised,
        days=sh.days,
        daily_mean_r=sh.mean_r,
        daily_std_r=sh.std_r,
        final_balance=result.initial_balance + summary["net_usd"],
    )
    return {
        "name": s.name,
        "version": s.version,
        "config_hash": s.config_hash,
        "config": s.config,
        "summary": summary,
        "daily": [{"day": metrics.day_label(d), "net_r": r} for d, r in daily],
        "curve": _curve(st, result.from_ms),
    }


def _breakdowns(trades: list[BacktestTrade]) -> dict[str, list[dict[str, Any]]]:
    return {
        dim: [{"strategy": s, "key": k, **summ.as_dict()} for s, k, summ in metrics.breakdown(trades, dim)]
        for dim in BREAKDOWN_DIMENSIONS
    }


def _coverage(result: RunResult) -> list[dict[str, Any]]:
    """Input coverage rows ordered by layer, symbol and input."""
    return [
        {
            "layer": c.layer,
            "symbol": c.symbol,
            "input": c.input,
            "evaluations": c.evaluations,
            "present": c.present,
            "lacking": c.evaluations - c.present,
            "share": c.share,
            "note": c.note,
        }
        for c in sorted(result.coverage, key=lambda c: (c.layer, c.symbol, c.input))
    ]


def _run_section(result: RunResult) -> dict[str, Any]:
    """What was run, over which range, and how long it took."""
    duration_s = max(result.finished_at_ms - result.started_at_ms, 0) / 1000
    return {
        "run_id": result.run_id,
        "source": result.source,
        "exchange": result.exchange,
        "symbols": list(result.symbols),
        "from_ms": result.from_ms,
        "to_ms": result.to_ms,
        "from": iso(result.from_ms),
        "to": iso(result.to_ms),
        "started_at": iso(result.started_at_ms),
        "finished_at": iso(result.finished_at_ms),
        "duration_s": duration_s,
        "partial": result.partial,
        "end_ms": result.end_ms,
        "end": iso(result.end_ms),
        "events_processed": result.events_processed,
        "trades_processed": result.trades_processed,
        "trades_per_s": result.trades_processed / duration_s if duration_s > 0 else None,
        "evaluations": result.evaluations,
        "signals": result.signals,
        "initial_balance": result.initial_balance,
        "params": result.params,
    }


def build(result: RunResult) -> dict[str, Any]:
    trades = metrics.by_exit(result.trades)
    per_strategy = _trades_by_strategy(result, trades)
    strategies = [_strategy_section(s, per_strategy[s.name], result) for s in result.strategies]
    coverage = _coverage(result)
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "run": _run_section(result),
        "definitions": DEFINITIONS,
        "strategies": strategies,
        "breakdowns": _breakdowns(trades),
        "coverage": coverage,
        "coverage_incomplete": sum(1 for c in coverage if c["lacking"] > 0),
        "evaluations_lacking_inputs": sum(c["lacking"] for c in coverage),
        "missing": list(result.missing),
        "bad_rows": list(result.bad_rows),
        "routing_tca": tca_section(result),
        "trades": [trade_row(t) for t in trades],
    }


DEFINITIONS = {
    "net_r": "gross − fees − slippage − funding, in R of each trade, summed over trades",
    "win_rate": "share of trades with net pnl_r > 0",
    "profit_factor": "sum of winning net R / |sum of losing net R|; null without a losing trade",
    "expectancy_r": "mean net R per trade",
    "max_drawdown_r": "largest fall of cumulative net R (trades ordered by exit time) from its running peak",
    "sharpe_per_day": "mean / sample std of net R per UTC day over every day of the range, zero days included",
    "sharpe_annualised": f"sharpe_per_day × √{metrics.TRADING_DAYS_PER_YEAR}",
    "funding_r": "funding paid by the position (> 0 = paid, < 0 = received)",
    "utc_hour": "hour (UTC) of the entry time",
    "score_band": f"score rounded down to a multiple of {metrics.SCORE_BAND_WIDTH:g}",
    "coverage": "per layer, symbol and input: evaluations whose input was present; lacking = evaluations − present",
    "routing_tca": "per strategy and bucket of its routing table, its routed entry orders (review.routing_tca)",
}
