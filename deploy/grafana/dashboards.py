"""tapeflow's Grafana dashboards as code: Market, Signals, Trading, Pipeline health, Intelligence, Watchlist.

Run `python deploy/grafana/dashboards.py` after changing a panel: it writes the provisioned JSON
(deploy/grafana/dashboards/*.json) and docs/reference/dashboards.md from the definitions below; `--check` only
compares (tests/deploy/test_dashboards.py fails when the files are stale). Every SQL panel runs in a
test against the real schema on plain PostgreSQL and on TimescaleDB with Grafana's macros
substituted, and every PromQL expression is parsed by promtool and checked, name and labels, against
a scrape of the running services. See grafana_model.py for why the model is hand-written.

SQL conventions: Grafana macros only ($__timeFilter, $__timeGroupAlias, $__timeFrom/$__timeTo,
$__interval); single-value variables are quoted in the SQL ('$symbol'), multi-value ones are not
(IN ($strategy)); queries that Grafana reads as time series return a `time` column first and either
one column per series or a `metric` column naming the series. The same SQL works on both engines:
the roll-ups (bars_5m, cvd_1m, ...) have the same columns on both, and nothing uses TimescaleDB-only
functions such as first()/last().
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from grafana_model import (  # noqa: E402 - the model sits beside this script, outside any package
    ALL,
    Annotation,
    ColumnThresholds,
    Dashboard,
    Panel,
    PromQL,
    Sql,
    Threshold,
    Variable,
    render,
)

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
OUT_DIR = HERE / "dashboards"
DOCS = REPO / "docs" / "reference" / "dashboards.md"

# --- variables -------------------------------------------------------------------------------------------
EXCHANGE = Variable(
    "exchange",
    "Exchange",
    "SELECT DISTINCT exchange FROM mark_prices WHERE event_time > now() - INTERVAL '7 days' ORDER BY 1",
    default="binance",
)
SYMBOL = Variable(
    "symbol",
    "Symbol",
    "SELECT DISTINCT symbol FROM bars_1m WHERE exchange = '$exchange' "
    "AND open_time > now() - INTERVAL '7 days' ORDER BY 1",
    default="BTCUSDT",
)
SYMBOLS = Variable(
    "symbols",
    "Symbols",
    "SELECT DISTINCT symbol FROM features WHERE eval_time > now() - INTERVAL '7 days' ORDER BY 1",
    multi=True,
)
STRATEGY = Variable(
    "strategy",
    "Strategy",
    "SELECT DISTINCT strategy FROM features "
    "WHERE eval_time > now() - INTERVAL '30 days' "
    "UNION SELECT DISTINCT strategy FROM positions UNION SELECT DISTINCT strategy FROM backtest_runs "
    "ORDER BY 1",
    multi=True,
)
MODE = Variable(
    "mode", "Mode", "SELECT DISTINCT mode FROM positions UNION SELECT 'paper' ORDER BY 1", multi=True, default="paper"
)

# --- Market ---------------------------------------------------------------------------------------------
MARKET = Dashboard(
    uid="tapeflow-market",
    title="tapeflow · Market",
    description="Price, order flow, book imbalance, funding, positioning and liquidations per symbol.",
    variables=(EXCHANGE, SYMBOL),
    annotations=(
        Annotation(
            "Liquidations of 100k USD and more",
            """
SELECT trade_time AS "time", liquidated_side || ' liquidated: ' || to_char(usd_value, 'FM999,999,999') ||
       ' USD at ' || avg_price AS text, symbol AS tags
FROM liquidations
WHERE exchange = '$exchange' AND symbol = '$symbol' AND usd_value >= 100000 AND $__timeFilter(trade_time)
ORDER BY 1""",
        ),
    ),
    panels=(
        Panel(
            "Price and liquidations",
            "timeseries",
            width=24,
            height=9,
            unit="none",
            question="Where did price go, and where were longs or shorts forced out?",
            points=("LONG liquidated", "SHORT liquidated"),
            queries=(
                Sql("""
SELECT $__timeGroupAlias(open_time, $__interval), (array_agg(close ORDER BY open_time DESC))[1] AS "close"
FROM bars_1m
WHERE exchange = '$exchange' AND symbol = '$symbol' AND $__timeFilter(open_time)
GROUP BY 1 ORDER BY 1"""),
                Sql("""
SELECT trade_time AS "time", liquidated_side || ' liquidated' AS metric, avg_price AS value
FROM liquidations
WHERE exchange = '$exchange' AND symbol = '$symbol' AND $__timeFilter(trade_time)
ORDER BY 1"""),
            ),
        ),
        Panel(
            "CVD fast (30m) and mid (4h)",
            "timeseries",
            unit="none",
            question="Do the fast and mid cumulative volume deltas agree on a direction (the v5x direction "
            "layer's resonance)?",
            queries=(
                Sql("""
SELECT "time", cvd_30m AS "CVD 30m", cvd_4h AS "CVD 4h"
FROM (
    SELECT open_time AS "time",
           sum(delta_qty) OVER (ORDER BY open_time RANGE BETWEEN INTERVAL '29 minutes' PRECEDING AND CURRENT ROW)
               AS cvd_30m,
           sum(delta_qty) OVER (ORDER BY open_time RANGE BETWEEN INTERVAL '239 minutes' PRECEDING AND CURRENT ROW)
               AS cvd_4h
    FROM cvd_1m
    WHERE exchange = '$exchange' AND symbol = '$symbol'
      AND open_time BETWEEN $__timeFrom()::timestamptz - INTERVAL '4 hours' AND $__timeTo()::timestamptz
) w
WHERE $__timeFilter("time")
ORDER BY 1"""),
            ),
        ),
        Panel(
            "Order-book imbalance (top 10 levels)",
            "timeseries",
            unit="percentunit",
            decimals=2,
            question="Is resting liquidity leaning to bids (> 0) or asks (< 0)?",
            thresholds=(
                Threshold(0.3, "orange", "v53's OBI gate for BTC vetoes a SHORT above +0.30 (and a LONG below -0.30)"),
            ),
            queries=(
                Sql("""
SELECT $__timeGroupAlias(event_time, $__interval), avg(obi_10) AS "OBI"
FROM depth_snapshots
WHERE exchange = '$exchange' AND symbol = '$symbol' AND $__timeFilter(event_time)
GROUP BY 1 ORDER BY 1"""),
            ),
        ),
        Panel(
            "Funding rate across symbols",
            "status-history",
            unit="percent",
            decimals=4,
            question="Which symbols pay extreme funding, and since when?",
            thresholds=(
                Threshold(0.03, "yellow", "moderate (v52 funding layer: +5 against the crowd)"),
                Threshold(0.1, "red", "extreme (v52: -5 with the crowd)"),
            ),
            queries=(
                Sql("""
SELECT $__timeGroupAlias(event_time, '1h'), symbol AS metric, avg(funding_rate) * 100 AS value
FROM mark_prices
WHERE exchange = '$exchange' AND $__timeFilter(event_time)
GROUP BY 1, 2 ORDER BY 1"""),
            ),
        ),
        Panel(
            "Open interest",
            "timeseries",
            unit="none",
            question="Is money entering (OI up) or leaving the market?",
            queries=(
                Sql("""
SELECT $__timeGroupAlias(event_time, $__interval), avg(value) AS "open interest"
FROM market_indicators
WHERE exchange = '$exchange' AND symbol = '$symbol' AND kind = 'open_interest' AND $__timeFilter(event_time)
GROUP BY 1 ORDER BY 1"""),
            ),
        ),
        Panel(
            "Long/short ratios",
            "timeseries",
            unit="none",
            decimals=2,
            question="How crowded is each side (accounts, top traders' positions, taker flow)?",
            thresholds=(Threshold(1.0, "yellow", "more longs than shorts"),),
            queries=(
                Sql("""
SELECT $__timeGroupAlias(event_time, $__interval), kind AS metric, avg(value) AS value
FROM market_indicators
WHERE exchange = '$exchange' AND symbol = '$symbol'
  AND kind IN ('long_short_account_ratio', 'top_trader_position_ratio', 'taker_buy_sell_ratio')
  AND $__timeFilter(event_time)
GROUP BY 1, 2 ORDER BY 1"""),
            ),
        ),
        Panel(
            "Volume by taker side",
            "barchart",
            width=24,
            unit="none",
            stack=True,
            question="Who is aggressive: takers buying or takers selling?",
            queries=(
                Sql("""
SELECT $__timeGroupAlias(open_time, $__interval), sum(buy_volume) AS "taker buy", -sum(sell_volume) AS "taker sell"
FROM bars_1m
WHERE exchange = '$exchange' AND symbol = '$symbol' AND $__timeFilter(open_time)
GROUP BY 1 ORDER BY 1"""),
            ),
        ),
    ),
)

# --- Signals ---------------------------------------------------------------------------------------------
SIGNALS = Dashboard(
    uid="tapeflow-signals",
    title="tapeflow · Signals",
    description="What the engine evaluated and signalled: scores by layer, gate vetoes, latest inputs.",
    variables=(SYMBOLS, STRATEGY),
    panels=(
        Panel(
            "Signal scores",
            "timeseries",
            width=24,
            unit="none",
            decimals=1,
            question="When did which strategy signal, in which direction and tier, with what score?",
            points=(),
            options={"legend": {"displayMode": "table", "placement": "right", "showLegend": True}},
            thresholds=(
                Threshold(75, "yellow", "entry threshold: standard tier (1.0R)"),
                Threshold(85, "red", "heavy threshold: heavy tier (1.5R)"),
            ),
            queries=(
                Sql("""
SELECT eval_time AS "time", strategy || ' ' || direction || ' ' || tier AS metric, score AS value
FROM signals
WHERE $__timeFilter(eval_time) AND symbol IN ($symbols) AND strategy IN ($strategy)
ORDER BY 1"""),
            ),
        ),
        Panel(
            "Signal timeline",
            "table",
            width=24,
            height=9,
            question="Which signals fired, with their exit plan and provenance?",
            queries=(
                Sql(
                    """
SELECT eval_time AS "time", strategy, strategy_version, symbol, direction, tier, round(score::numeric, 1) AS score,
       price, sl_price, tp1_price, tp2_price, is_flip, config_hash
FROM signals
WHERE $__timeFilter(eval_time) AND symbol IN ($symbols) AND strategy IN ($strategy)
ORDER BY eval_time DESC
LIMIT 500""",
                    fmt="table",
                ),
            ),
        ),
        Panel(
            "Score by layer",
            "timeseries",
            unit="none",
            decimals=1,
            question="Which layers carry the score (direction, crowding, environment, ...)?",
            queries=(
                Sql("""
SELECT $__timeGroupAlias(eval_time, $__interval), l.key AS metric, avg(l.value::double precision) AS value
FROM features f, jsonb_each_text(f.layer_scores) l
WHERE $__timeFilter(f.eval_time) AND f.symbol IN ($symbols) AND f.strategy IN ($strategy)
GROUP BY 1, 2 ORDER BY 1"""),
            ),
        ),
        Panel(
            "Gate vetoes by reason",
            "barchart",
            unit="none",
            stack=True,
            question="Which gates veto otherwise valid signals, and how often?",
            queries=(
                Sql("""
SELECT $__timeGroupAlias(eval_time, $__interval), gate AS metric, count(*) AS value
FROM features
WHERE gate IS NOT NULL AND $__timeFilter(eval_time) AND symbol IN ($symbols) AND strategy IN ($strategy)
GROUP BY 1, 2 ORDER BY 1"""),
            ),
        ),
        Panel(
            "Why no signal",
            "table",
            width=8,
            question="What blocks evaluations most: no direction, warm-up, gates, tier, cooldown?",
            queries=(
                Sql(
                    """
SELECT coalesce(block_reason, 'signal') AS outcome, count(*) AS evaluations
FROM features
WHERE $__timeFilter(eval_time) AND symbol IN ($symbols) AND strategy IN ($strategy)
GROUP BY 1 ORDER BY 2 DESC""",
                    fmt="table",
                ),
            ),
        ),
        Panel(
            "Latest features per symbol",
            "table",
            width=16,
            question="What does the engine see right now for each symbol and strategy?",
            queries=(
                Sql(
                    """
SELECT DISTINCT ON (symbol, strategy)
       symbol, strategy, eval_time AS "evaluated", round(score::numeric, 1) AS score, direction, gate, block_reason,
       (inputs->>'cvd_fast')::double precision AS cvd_fast, (inputs->>'cvd_mid')::double precision AS cvd_mid,
       (inputs->>'obi')::double precision AS obi, (inputs->>'funding_rate')::double precision AS funding_rate,
       (inputs->>'oi_change')::double precision AS oi_change,
       (inputs->>'long_short_ratio')::double precision AS long_short_ratio,
       (inputs->>'atr_price_ratio')::double precision AS atr_price_ratio
FROM features
WHERE $__timeFilter(eval_time) AND symbol IN ($symbols) AND strategy IN ($strategy)
ORDER BY symbol, strategy, eval_time DESC""",
                    fmt="table",
                ),
            ),
        ),
    ),
)

# --- Trading ---------------------------------------------------------------------------------------------
_CLOSED = "FROM trades_closed WHERE mode IN ($mode) AND strategy IN ($strategy) AND $__timeFilter(exit_time)"
TRADING = Dashboard(
    uid="tapeflow-trading",
    title="tapeflow · Trading",
    description="Paper and live results in R: equity, win rate, profit factor, drawdown, positions, exits, "
    "costs, and backtest runs side by side.",
    variables=(STRATEGY, MODE),
    time_from="now-7d",
    refresh="1m",
    panels=(
        Panel(
            "Equity in R",
            "timeseries",
            width=24,
            height=9,
            unit="none",
            decimals=2,
            question="How has each strategy's account grown in R, per mode (paper, testnet, live)?",
            queries=(
                Sql(f"""
SELECT exit_time AS "time", strategy || ' · ' || mode AS metric,
       sum(pnl_r_net) OVER (PARTITION BY strategy, mode ORDER BY exit_time, position_id) AS value
{_CLOSED}
ORDER BY 1"""),
            ),
        ),
        Panel(
            "Win rate",
            "stat",
            width=6,
            height=5,
            unit="percentunit",
            decimals=1,
            question="Which share of closed trades made money after fees (net pnl_r > 0)?",
            thresholds=(
                Threshold(0.4, "yellow", "below 40 % the R multiples must carry the result"),
                Threshold(0.5, "blue", "above half"),
            ),
            queries=(
                Sql(
                    f"""
SELECT count(*) FILTER (WHERE pnl_r_net > 0)::double precision / nullif(count(*), 0) AS "win rate"
{_CLOSED}""",
                    fmt="table",
                ),
            ),
        ),
        Panel(
            "Profit factor",
            "stat",
            width=6,
            height=5,
            unit="none",
            decimals=2,
            question="How many R were won for every R lost?",
            thresholds=(
                Threshold(1.0, "yellow", "break-even: below 1 the strategy loses money"),
                Threshold(1.5, "blue", "robust"),
            ),
            queries=(
                Sql(
                    f"""
SELECT sum(pnl_r_net) FILTER (WHERE pnl_r_net > 0) / nullif(-sum(pnl_r_net) FILTER (WHERE pnl_r_net < 0), 0)
       AS "profit factor"
{_CLOSED}""",
                    fmt="table",
                ),
            ),
        ),
        Panel(
            "Max drawdown",
            "stat",
            width=6,
            height=5,
            unit="none",
            decimals=2,
            question="What was the deepest fall of the equity curve from its peak, in R?",
            thresholds=(
                Threshold(5, "orange", "the daily loss limit of the risk guard (-5R)"),
                Threshold(10, "red", "twice the daily limit"),
            ),
            queries=(
                Sql(
                    f"""
SELECT coalesce(max(peak - equity), 0) AS "max drawdown R"
FROM (
    SELECT equity, greatest(0, max(equity) OVER (ORDER BY exit_time, position_id)) AS peak
    FROM (SELECT exit_time, position_id, sum(pnl_r_net) OVER (ORDER BY exit_time, position_id) AS equity
          {_CLOSED}) e
) d""",
                    fmt="table",
                ),
            ),
        ),
        Panel(
            "Open positions",
            "stat",
            width=6,
            height=5,
            unit="none",
            question="How many positions are open now?",
            thresholds=(Threshold(12, "red", "the risk guard's default maximum of open positions"),),
            queries=(
                Sql(
                    """
SELECT count(*) AS "open positions"
FROM positions o
WHERE o.event = 'opened' AND o.mode IN ($mode) AND o.strategy IN ($strategy)
  AND NOT EXISTS (SELECT 1 FROM positions c WHERE c.mode = o.mode AND c.position_id = o.position_id
                  AND c.event = 'closed')""",
                    fmt="table",
                ),
            ),
        ),
        Panel(
            "Results by strategy",
            "table",
            width=24,
            height=6,
            question="Trades, win rate, net R, profit factor, drawdown and costs of each strategy and mode.",
            queries=(
                Sql(
                    f"""
SELECT strategy, mode, count(*) AS trades,
       round(100.0 * count(*) FILTER (WHERE pnl_r_net > 0) / count(*), 1) AS "win rate %",
       round(sum(pnl_r_net), 2) AS "net R",
       round(sum(pnl_r_net) FILTER (WHERE pnl_r_net > 0) / nullif(-sum(pnl_r_net) FILTER (WHERE pnl_r_net < 0), 0), 2)
           AS "profit factor",
       round(max(greatest(peak, 0) - equity), 2) AS "max DD R",
       round(sum(fees_r), 2) AS "fees R", round(sum(slippage_r), 2) AS "slippage R"
FROM (
    SELECT *, max(equity) OVER (PARTITION BY strategy, mode ORDER BY exit_time, position_id) AS peak
    FROM (SELECT strategy, mode, exit_time, position_id, pnl_r_net, fees_r, slippage_r,
                 sum(pnl_r_net) OVER (PARTITION BY strategy, mode ORDER BY exit_time, position_id) AS equity
          {_CLOSED}) e
) d
GROUP BY strategy, mode ORDER BY strategy, mode""",
                    fmt="table",
                ),
            ),
        ),
        Panel(
            "Open positions (detail)",
            "table",
            width=24,
            height=6,
            question="Which positions are open, since when, with which stop and targets?",
            queries=(
                Sql(
                    """
SELECT o.event_time AS opened, o.mode, o.strategy, o.symbol, o.direction, o.tier, o.entry_price, o.qty,
       o.sl_price, o.tp1_price, o.tp2_price, t.position_id IS NOT NULL AS tp1_hit
FROM positions o
LEFT JOIN positions t ON t.mode = o.mode AND t.position_id = o.position_id AND t.event = 'tp1'
WHERE o.event = 'opened' AND o.mode IN ($mode) AND o.strategy IN ($strategy)
  AND NOT EXISTS (SELECT 1 FROM positions c WHERE c.mode = o.mode AND c.position_id = o.position_id
                  AND c.event = 'closed')
ORDER BY o.event_time DESC""",
                    fmt="table",
                ),
            ),
        ),
        Panel(
            "Closed trades by exit reason",
            "table",
            width=12,
            question="How do trades end (sl, sl_be, tp, timeout, signal_flip), and what does each exit earn?",
            queries=(
                Sql(
                    f"""
SELECT exit_reason, count(*) AS trades, round(sum(pnl_r_net), 2) AS "net R", round(avg(pnl_r_net), 3) AS "avg R"
{_CLOSED}
GROUP BY 1 ORDER BY 2 DESC""",
                    fmt="table",
                ),
            ),
        ),
        Panel(
            "Fees and slippage in R",
            "barchart",
            width=12,
            unit="none",
            decimals=3,
            stack=True,
            question="What do trading costs take out of each hour's results, in R? (Funding is paid when "
            "positive, received when negative.)",
            queries=(
                Sql(f"""
SELECT $__timeGroupAlias(exit_time, '1h'), sum(fees_r) AS "fees R", sum(slippage_r) AS "slippage R",
       sum(funding_r) AS "funding R"
{_CLOSED}
GROUP BY 1 ORDER BY 1"""),
            ),
        ),
        Panel(
            "Outcome labels: what signals and trades earned after 12, 24 and 36 h",
            "table",
            width=24,
            height=8,
            question="Of the signals taken, vetoed and the trades, how many earned more than the threshold "
            "(pos), lost more (neg) or neither, and their mean net ROI, per horizon? (docs/how-to/labels.md)",
            queries=(
                Sql(
                    """
SELECT strategy, sample_kind AS sample, CASE WHEN taken THEN 'taken' ELSE 'vetoed' END AS taken, horizon_h AS "h",
       count(*) FILTER (WHERE label = 'pos') AS pos, count(*) FILTER (WHERE label = 'neutral') AS neutral,
       count(*) FILTER (WHERE label = 'neg') AS neg,
       round((100 * avg(net_roi))::numeric, 3) AS "mean net ROI %", round(sum(fees)::numeric, 2) AS fees,
       round(sum(funding)::numeric, 2) AS funding
FROM outcome_labels
WHERE source IN ($mode) AND strategy IN ($strategy) AND $__timeFilter(t0)
GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3 DESC, 4""",
                    fmt="table",
                ),
            ),
        ),
        Panel(
            "Confidence model health: rolling AUC and Brier over the last 100 labelled trades",
            "timeseries",
            width=24,
            height=8,
            unit="none",
            decimals=3,
            question="Is each strategy's confidence model still right about its trades? AUC below 0.55 or Brier "
            "above 0.25 (once 30 trades are labelled) blocks its promotion and rolls a canary back; a trade is "
            "a win when its 12 h outcome label is pos (docs/tutorials/train-a-confidence-model.md)",
            queries=(
                Sql("""
SELECT "time", strategy || ' ' || role || ' AUC' AS metric, auc AS value
FROM model_health
WHERE strategy IN ($strategy) AND auc IS NOT NULL AND $__timeFilter("time")
UNION ALL
SELECT "time", strategy || ' ' || role || ' Brier' AS metric, brier AS value
FROM model_health
WHERE strategy IN ($strategy) AND brier IS NOT NULL AND $__timeFilter("time")
ORDER BY 1"""),
            ),
        ),
        Panel(
            "Risk guard decisions",
            "table",
            width=24,
            height=6,
            question="When did the risk guard pause, halt, flatten or resume, and why?",
            queries=(
                Sql(
                    """
SELECT event_time AS "time", mode, scope, decision, state, reason, daily_pnl_r, consecutive_losses, paused_until
FROM risk_events
WHERE mode IN ($mode) AND decision NOT IN ('allow') AND scope NOT LIKE 'strategy:%' AND $__timeFilter(event_time)
ORDER BY event_time DESC
LIMIT 200""",
                    fmt="table",
                ),
            ),
        ),
        Panel(
            "Backtest runs side by side",
            "table",
            width=24,
            height=8,
            question="How do backtests of the selected strategies compare (same metrics as live)?",
            queries=(
                Sql(
                    """
SELECT started_at, run_id, strategy, strategy_version, config_hash, source, array_to_string(symbols, ',') AS symbols,
       from_time, to_time, status, trades, round((win_rate * 100)::numeric, 1) AS "win rate %", net_r AS "net R",
       round(profit_factor::numeric, 2) AS "profit factor", max_drawdown_r AS "max DD R",
       round(sharpe::numeric, 2) AS sharpe, fees_r AS "fees R"
FROM backtest_runs
WHERE parent_run_id IS NULL AND strategy IN ($strategy) AND $__timeFilter(started_at)
ORDER BY started_at DESC
LIMIT 100""",
                    fmt="table",
                ),
            ),
        ),
    ),
)


# --- Pipeline health (Prometheus, plus the database's own records of gaps and dead letters) ---------------
def p99(histogram: str, legend: str) -> PromQL:
    return PromQL(f"histogram_quantile(0.99, sum by (le) (rate({histogram}_bucket[$__rate_interval])))", legend=legend)


def instant_stat(
    title: str,
    expr: str,
    by: str,
    *,
    question: str,
    thresholds: tuple[Threshold, ...],
    width: int,
    height: int,
    unit: str,
    options: dict[str, Any] | None = None,
) -> Panel:
    """A stat panel of one PromQL expression read at the range's end, a value per ``by`` label (its legend):
    the pipeline's state panels (up, freshness, risk guard, SLIs, degradation, notifications, resyncs)."""
    return Panel(
        title,
        "stat",
        width=width,
        height=height,
        unit=unit,
        question=question,
        thresholds=thresholds,
        options=options or {},
        queries=(PromQL(expr, legend=f"{{{{{by}}}}}", instant=True),),
    )


_LAG = '{__name__=~"tapeflow_(engine|sink|executor)_consumer_lag_messages"}'
_DLQ = '{__name__=~"tapeflow_(producer|engine|sink|executor_publish)_dlq_messages_total"}'
PIPELINE = Dashboard(
    uid="tapeflow-pipeline",
    title="tapeflow · Pipeline health",
    description="Is every service up, fresh and keeping up? Rates, lag, freshness, gaps, dead letters, "
    "resyncs and latencies (the numbers the alert rules watch).",
    time_from="now-3h",
    refresh="15s",
    panels=(
        instant_stat(
            "Services up",
            'up{job=~"producer|engine|sink|executor|notifier"}',
            "job",
            question="Can Prometheus scrape every tapeflow service (1 = up)?",
            thresholds=(Threshold(1, "green", "up"),),
            width=24,
            height=4,
            unit="none",
            options={"colorMode": "background"},
        ),
        Panel(
            "Records published per second",
            "timeseries",
            unit="ops",
            question="How many records does each topic receive per second?",
            queries=(
                PromQL(
                    "sum by (topic) (rate(tapeflow_producer_messages_out_total[$__rate_interval]))", legend="{{topic}}"
                ),
                PromQL(
                    "sum by (topic) (rate(tapeflow_executor_publish_messages_out_total[$__rate_interval]))",
                    legend="executor {{topic}}",
                ),
            ),
        ),
        Panel(
            "Records consumed and rows written per second",
            "timeseries",
            unit="ops",
            question="Do the engine and the sink keep up with what is published?",
            queries=(
                PromQL(
                    "sum by (topic) (rate(tapeflow_engine_input_records_total[$__rate_interval]))",
                    legend="engine {{topic}}",
                ),
                PromQL(
                    "sum by (table) (rate(tapeflow_sink_rows_written_total[$__rate_interval]))", legend="sink {{table}}"
                ),
            ),
        ),
        Panel(
            "Consumer lag",
            "timeseries",
            unit="none",
            question="How far behind its topics is each consumer group?",
            thresholds=(Threshold(10000, "red", "TapeflowConsumerLagHigh after 2 minutes"),),
            queries=(PromQL(f"sum by (job, group, topic) ({_LAG})", legend="{{group}} {{topic}}"),),
        ),
        Panel(
            "Market-data freshness",
            "timeseries",
            unit="s",
            question="How old is the newest event of each feed (exchange, symbol, stream)?",
            thresholds=(Threshold(30, "red", "TapeflowMarketDataStale: the risk guard refuses new orders"),),
            queries=(
                PromQL(
                    "max by (exchange, symbol, stream) (tapeflow_producer_last_event_age_seconds)",
                    legend="{{symbol}} {{stream}}",
                ),
            ),
        ),
        Panel(
            "Database freshness",
            "timeseries",
            unit="s",
            question="How old is the newest row the sink committed, per table?",
            thresholds=(Threshold(60, "orange", "a minute behind the stream"),),
            queries=(
                PromQL("time() - max by (table) (tapeflow_sink_last_committed_event_time_seconds)", legend="{{table}}"),
            ),
        ),
        Panel(
            "Trade gaps",
            "barchart",
            unit="none",
            question="How many aggTrade holes were found, filled from REST, or given up (published on md.gaps)?",
            thresholds=(Threshold(1, "red", "any unfilled gap: the audit will report it"),),
            queries=(
                PromQL(
                    "sum by (symbol) (increase(tapeflow_producer_gaps_filled_total[$__interval]))",
                    legend="filled {{symbol}}",
                ),
                PromQL(
                    "sum by (symbol) (increase(tapeflow_producer_gaps_unfilled_total[$__interval]))",
                    legend="unfilled {{symbol}}",
                ),
            ),
        ),
        Panel(
            "Known gaps (md.gaps)",
            "table",
            question="Which id ranges could not be filled, and why?",
            queries=(
                Sql(
                    """
SELECT detected_time AS "time", exchange, symbol, stream, from_id, to_id, to_id - from_id + 1 AS ids, reason
FROM data_gaps
WHERE $__timeFilter(detected_time)
ORDER BY detected_time DESC
LIMIT 200""",
                    fmt="table",
                ),
            ),
        ),
        Panel(
            "Dead letters per second",
            "timeseries",
            unit="ops",
            question="Which component dead-letters what, and why?",
            thresholds=(Threshold(0.0001, "red", "TapeflowDeadLettersGrowing: any dead letter"),),
            queries=(
                PromQL(
                    f"sum by (job, topic, reason) (rate({_DLQ}[$__rate_interval]))",
                    legend="{{job}} {{topic}} {{reason}}",
                ),
            ),
        ),
        Panel(
            "Dead letters (pipeline_errors)",
            "table",
            question="What exactly failed, where, and with which error?",
            queries=(
                Sql(
                    """
SELECT event_time AS "time", stage, source_topic, source_partition, source_offset, left(error, 200) AS error
FROM pipeline_errors
WHERE $__timeFilter(event_time)
ORDER BY event_time DESC
LIMIT 200""",
                    fmt="table",
                ),
            ),
        ),
        Panel(
            "Order-book resyncs (10 min)",
            "timeseries",
            unit="none",
            question="How often is each book rebuilt from a snapshot, and why?",
            thresholds=(Threshold(5, "red", "TapeflowBookResyncStorm: more than 5 in 10 minutes"),),
            queries=(
                PromQL(
                    "sum by (symbol, reason) (increase(tapeflow_producer_book_resyncs_total[10m]))",
                    legend="{{symbol}} {{reason}}",
                ),
            ),
        ),
        Panel(
            "Sink errors (5 min)",
            "timeseries",
            unit="none",
            question="Does the sink fail to decode, map or write anything?",
            thresholds=(Threshold(1, "red", "TapeflowSinkErrors"),),
            queries=(
                PromQL("sum by (table, kind) (increase(tapeflow_sink_errors_total[5m]))", legend="{{table}} {{kind}}"),
            ),
        ),
        Panel(
            "Latencies (p99)",
            "timeseries",
            width=24,
            unit="s",
            question="How long does a record take at each hop: receive to broker ack, evaluation to publication, "
            "batch commit, signal to order?",
            thresholds=(Threshold(0.2, "orange", "the receive-to-signal p99 target, 200 ms"),),
            queries=(
                p99("tapeflow_producer_produce_latency_seconds", "producer receive→ack"),
                p99("tapeflow_engine_evaluation_lag_seconds", "engine evaluation→publish"),
                p99("tapeflow_sink_commit_seconds", "sink batch commit"),
                p99("tapeflow_executor_signal_to_order_seconds", "executor signal→order"),
            ),
        ),
        instant_stat(
            "Time since the last evaluation",
            "time() - max by (instance) (tapeflow_engine_last_evaluation_time_seconds)",
            "instance",
            question="Is the engine evaluating (every symbol at least every 15 s while data flows)?",
            thresholds=(
                Threshold(60, "orange", "several evaluation intervals missed"),
                Threshold(600, "red", "TapeflowNoSignalEvaluation"),
            ),
            width=8,
            height=5,
            unit="s",
        ),
        instant_stat(
            "Risk guard state",
            "max by (instance) (tapeflow_executor_risk_state)",
            "instance",
            question="Is the risk guard letting entries through (0 active, 1 paused, 2 halted)?",
            thresholds=(
                Threshold(1, "orange", "paused after a losing streak"),
                Threshold(2, "red", "halted: daily loss limit or kill switch"),
            ),
            width=8,
            height=5,
            unit="none",
        ),
        instant_stat(
            "Execution SLIs missing their objective",
            "max by (sli) (tapeflow_executor_slo_breached_seconds)",
            "sli",
            question="Which execution SLI (round trip, stream lag, websocket, gate errors, maker fills, balance) "
            "has missed its objective, and for how many 5-minute windows in a row?",
            thresholds=(
                Threshold(300, "orange", "the last window missed it"),
                Threshold(900, "red", "TapeflowExecutionSloBreached: three windows in a row"),
            ),
            width=12,
            height=5,
            unit="s",
        ),
        instant_stat(
            "Execution degradation",
            "max by (rule) (tapeflow_executor_degradation_state)",
            "rule",
            question="Is the executor working orders degraded: market only (makers do not fill) or one market "
            "order without TWAP or maker wait (slow round trips)?",
            thresholds=(Threshold(1, "orange", "TapeflowExecutionDegraded: the rule is in force"),),
            width=12,
            height=5,
            unit="none",
        ),
        instant_stat(
            "Notifications failed (1 h)",
            "sum by (channel) (increase(tapeflow_notify_failures_total[1h]))",
            "channel",
            question="Do the alerts to people arrive (Telegram, Discord, webhook)?",
            thresholds=(Threshold(1, "red", "a channel refused or could not be reached"),),
            width=8,
            height=5,
            unit="none",
        ),
    ),
)

# --- Intelligence ------------------------------------------------------------------------------------------
# Three variables of its own: which symbols, how many contracts the funding grid ranks, and the USD size
# from which a trade counts as a whale's. The grid ranks the contracts by the quote volume of the 24 h
# before the range's end, summed from bars_1m: on plain PostgreSQL bars_1h is a view whose time filter
# applies to its bucket expression and could not prune bars_1m's partitions (it would read every bar).
INTEL_SYMBOLS = Variable(
    "symbols",
    "Symbols",
    "SELECT DISTINCT symbol FROM bars_1m WHERE exchange = '$exchange' "
    "AND open_time > now() - INTERVAL '1 day' ORDER BY 1",
    multi=True,
    default=ALL,
)
TOP = Variable("top", "Top contracts by 24 h volume", choices=("10", "20", "50"), default="20")
WHALE = Variable("whale", "Whale threshold", choices=("100000", "250000", "500000", "1000000"), default="250000")
_WHALES = """FROM trades
WHERE exchange = '$exchange' AND symbol IN ($symbols) AND $__timeFilter(trade_time)
  AND price * qty >= '$whale'::double precision"""
# Data quality: seconds since each source's newest row of a symbol (NULL: none in the last day). The newest
# trade and book snapshot are found through their primary keys' id order (agg_id, last_update_id rise with
# time per symbol), which both engines read backwards from an index instead of sorting a day of rows.
_SOURCES = (
    (
        "trade age s",
        "SELECT t.trade_time FROM trades t WHERE t.exchange = s.exchange AND t.symbol = s.symbol",
        "AND t.trade_time > now() - INTERVAL '1 day' ORDER BY t.agg_id DESC LIMIT 1",
    ),
    (
        "mark age s",
        "SELECT max(m.event_time) FROM mark_prices m WHERE m.exchange = s.exchange AND m.symbol = s.symbol",
        "AND m.event_time > now() - INTERVAL '1 day'",
    ),
    (
        "book age s",
        "SELECT d.event_time FROM depth_snapshots d WHERE d.exchange = s.exchange AND d.symbol = s.symbol",
        "AND d.event_time > now() - INTERVAL '1 day' ORDER BY d.last_update_id DESC LIMIT 1",
    ),
    (
        "OI age s",
        "SELECT max(i.event_time) FROM market_indicators i WHERE i.exchange = s.exchange",
        "AND i.symbol = s.symbol AND i.kind = 'open_interest' AND i.event_time > now() - INTERVAL '1 day'",
    ),
    (
        "evaluation age s",
        "SELECT max(f.eval_time) FROM features f WHERE f.exchange = s.exchange",
        "AND f.symbol = s.symbol AND f.eval_time > now() - INTERVAL '1 day'",
    ),
)
_AGE_COLUMNS = "\n".join(
    f'''       round(extract(epoch FROM now() - (
           {select}
             {rest}
       )))::int AS "{name}",'''
    for name, select, rest in _SOURCES
)


INTELLIGENCE = Dashboard(
    uid="tapeflow-intelligence",
    title="tapeflow · Intelligence",
    description="Where the market's pressure is: funding of the most traded contracts, open interest against "
    "liquidations, whale trades and order-book walls, and whether each symbol's data can be trusted. "
    "The signals these inputs produce are in the Signals dashboard's Signal timeline "
    "(tapeflow-signals); this one does not repeat it.",
    variables=(EXCHANGE, INTEL_SYMBOLS, TOP, WHALE),
    refresh="1m",
    panels=(
        Panel(
            "Funding heatmap: top contracts by 24 h volume",
            "status-history",
            width=24,
            height=10,
            unit="percent",
            decimals=4,
            base_color="blue",
            question="Which of the most traded contracts pay extreme funding, in which direction, and since when? "
            "(Rows are ranked by quote volume over the 24 h before the range's end; cells are 15-minute "
            "averages in % per funding interval. A status history rather than Grafana's heatmap panel: "
            "the heatmap buckets numeric values on its y axis, while this grid needs one row per symbol "
            "coloured by the value, which status history draws from the SQL's time/metric/value rows.)",
            thresholds=(
                Threshold(
                    -0.1,
                    "light-blue",
                    "moderate negative funding: shorts pay (v52's funding "
                    "layer scores |rate|, so its bands hold on both sides)",
                ),
                Threshold(-0.03, "green", "neutral"),
                Threshold(0.03, "yellow", "moderate: longs pay (v52: +5 against the crowd)"),
                Threshold(0.1, "red", "extreme (v52: -5 with the crowd)"),
            ),
            queries=(
                Sql("""
WITH ranked AS (
    SELECT symbol, row_number() OVER (ORDER BY sum(quote_volume) DESC, symbol) AS rank
    FROM bars_1m
    WHERE exchange = '$exchange'
      AND open_time > $__timeTo()::timestamptz - INTERVAL '24 hours' AND open_time <= $__timeTo()::timestamptz
    GROUP BY symbol
    ORDER BY rank
    LIMIT '$top'::int
)
SELECT $__timeGroupAlias(m.event_time, '15m'), to_char(r.rank, 'FM00') || ' ' || m.symbol AS metric,
       avg(m.funding_rate) * 100 AS value
FROM mark_prices m
JOIN ranked r ON r.symbol = m.symbol
WHERE m.exchange = '$exchange' AND $__timeFilter(m.event_time)
GROUP BY 1, 2 ORDER BY 1"""),
            ),
        ),
        Panel(
            "Open interest change per symbol",
            "timeseries",
            unit="percentunit",
            decimals=2,
            question="Which symbols are adding or shedding open interest since the start of the range? (OI is "
            "in contracts, so the change, not the level, compares across symbols.)",
            options={
                "legend": {
                    "displayMode": "table",
                    "placement": "right",
                    "showLegend": True,
                    "calcs": ["lastNotNull"],
                    "sortBy": "Last *",
                    "sortDesc": True,
                }
            },
            queries=(
                Sql("""
SELECT "time", symbol AS metric, oi / nullif(first_value(oi) OVER (PARTITION BY symbol ORDER BY "time"), 0) - 1 AS value
FROM (
    SELECT $__timeGroupAlias(event_time, $__interval), symbol, avg(value) AS oi
    FROM market_indicators
    WHERE exchange = '$exchange' AND kind = 'open_interest' AND symbol IN ($symbols) AND $__timeFilter(event_time)
    GROUP BY 1, 2
) b
ORDER BY 1"""),
            ),
        ),
        Panel(
            "Liquidated USD by side",
            "barchart",
            unit="currencyUSD",
            stack=True,
            question="Who is being forced out, longs (below zero) or shorts (above zero), and how much?",
            queries=(
                Sql("""
SELECT $__timeGroupAlias(trade_time, $__interval),
       coalesce(sum(usd_value) FILTER (WHERE liquidated_side = 'SHORT'), 0) AS "shorts liquidated",
       -coalesce(sum(usd_value) FILTER (WHERE liquidated_side = 'LONG'), 0) AS "longs liquidated"
FROM liquidations
WHERE exchange = '$exchange' AND symbol IN ($symbols) AND $__timeFilter(trade_time)
GROUP BY 1 ORDER BY 1"""),
            ),
        ),
        Panel(
            "Whale flow",
            "barchart",
            unit="currencyUSD",
            stack=True,
            question="Are whales buying (above zero) or selling (below zero) with market orders? (Aggregated "
            "trades of at least $whale USD: one taker order at one price.)",
            queries=(
                Sql(f"""
SELECT $__timeGroupAlias(trade_time, $__interval),
       coalesce(sum(price * qty) FILTER (WHERE taker_side = 'BUY'), 0) AS "whale taker buys",
       -coalesce(sum(price * qty) FILTER (WHERE taker_side = 'SELL'), 0) AS "whale taker sells"
{_WHALES}
GROUP BY 1 ORDER BY 1"""),
            ),
        ),
        Panel(
            "Whale trades",
            "table",
            question="Which trades were large enough to matter, where and which way?",
            queries=(
                Sql(
                    f"""
SELECT trade_time AS "time", symbol, taker_side, price, qty, round((price * qty)::numeric) AS usd
{_WHALES}
ORDER BY trade_time DESC
LIMIT 200""",
                    fmt="table",
                ),
            ),
        ),
        Panel(
            "Order-book walls and icebergs now",
            "table",
            width=24,
            height=7,
            question="Where do large resting orders stand near the mid, how long have they stood, and were walls "
            "pulled or filled, or icebergs refilled, in the detectors' window? (The latest evaluation of "
            "each symbol in the 15 minutes before the range's end whose inputs carry the book detectors' "
            "fields; an empty cell: no wall on that side.)",
            queries=(
                Sql(
                    """
SELECT DISTINCT ON (symbol)
       symbol, eval_time AS "evaluated",
       (inputs->>'wall_bid_usd')::double precision AS "bid wall USD",
       (inputs->>'wall_bid_distance_bps')::double precision AS "bid wall bps",
       (inputs->>'wall_bid_age_s')::double precision AS "bid wall age s",
       (inputs->>'wall_ask_usd')::double precision AS "ask wall USD",
       (inputs->>'wall_ask_distance_bps')::double precision AS "ask wall bps",
       (inputs->>'wall_ask_age_s')::double precision AS "ask wall age s",
       (inputs->>'wall_pulled_bid')::double precision AS "pulled bid", (inputs->>'wall_pulled_ask')::double precision
           AS "pulled ask",
       (inputs->>'wall_filled_bid')::double precision AS "filled bid", (inputs->>'wall_filled_ask')::double precision
           AS "filled ask",
       (inputs->>'iceberg_refills_bid')::double precision AS "iceberg refills bid",
       (inputs->>'iceberg_refills_ask')::double precision AS "iceberg refills ask",
       (inputs->>'iceberg_usd_bid')::double precision AS "iceberg USD bid",
       (inputs->>'iceberg_usd_ask')::double precision AS "iceberg USD ask"
FROM features
WHERE exchange = '$exchange' AND symbol IN ($symbols)
  AND eval_time > $__timeTo()::timestamptz - INTERVAL '15 minutes' AND eval_time <= $__timeTo()::timestamptz
  AND inputs ?| ARRAY['wall_pulled_bid', 'wall_pulled_ask', 'iceberg_refills_bid', 'iceberg_refills_ask']
ORDER BY symbol, eval_time DESC""",
                    fmt="table",
                ),
            ),
        ),
        Panel(
            "Wall sizes near the mid",
            "timeseries",
            width=24,
            unit="currencyUSD",
            question="How large were the nearest bid and ask walls over time, and when did they appear or vanish?",
            queries=(
                Sql("""
SELECT $__timeGroupAlias(f.eval_time, $__interval), f.symbol || ' ' || w.side AS metric, max(w.usd) AS value
FROM features f,
     LATERAL (VALUES ('bid wall', (f.inputs->>'wall_bid_usd')::double precision),
                     ('ask wall', (f.inputs->>'wall_ask_usd')::double precision)) w(side, usd)
WHERE f.exchange = '$exchange' AND f.symbol IN ($symbols) AND $__timeFilter(f.eval_time) AND w.usd IS NOT NULL
GROUP BY 1, 2 ORDER BY 1"""),
            ),
        ),
        Panel(
            "Data quality per symbol",
            "table",
            width=16,
            height=9,
            question="Can each symbol's data be trusted now: how old is its newest trade, mark price, book "
            "snapshot, open interest and evaluation in the database, and how many trade-id gaps stayed "
            "unfilled (md.gaps) in the range? (Feature records do not say why an input is absent, so "
            "staleness is measured at the sources; an empty age: nothing in the last day. Resyncs are "
            "only counted by the producer: next panel.)",
            columns=(
                ColumnThresholds(
                    "trade age s",
                    (
                        Threshold(30, "orange", "the risk guard's stale_market_data_s: it refuses new orders"),
                        Threshold(300, "red", "the feed is down"),
                    ),
                ),
                ColumnThresholds(
                    "mark age s",
                    (
                        Threshold(30, "orange", "md.mark pushes every second or so"),
                        Threshold(300, "red", "the feed is down"),
                    ),
                ),
                ColumnThresholds(
                    "book age s",
                    (
                        Threshold(30, "orange", "the risk guard's stale_market_data_s: it refuses new orders"),
                        Threshold(300, "red", "the feed is down"),
                    ),
                ),
                ColumnThresholds(
                    "OI age s",
                    (
                        Threshold(600, "orange", "a 5-minute indicator poll missed"),
                        Threshold(1800, "red", "the indicator poller is down"),
                    ),
                ),
                ColumnThresholds(
                    "evaluation age s",
                    (
                        Threshold(60, "orange", "several 15 s evaluation intervals missed"),
                        Threshold(600, "red", "TapeflowNoSignalEvaluation"),
                    ),
                ),
                ColumnThresholds(
                    "unfilled gaps",
                    (Threshold(1, "red", "trade ids are missing for good: windows over them are incomplete"),),
                ),
            ),
            queries=(
                Sql(
                    f"""
SELECT s.symbol,
{_AGE_COLUMNS}
       g.gaps AS "unfilled gaps", g.ids AS "missing trade ids", g.last_gap AS "last gap"
FROM (SELECT DISTINCT exchange, symbol FROM bars_1m
      WHERE exchange = '$exchange' AND open_time > now() - INTERVAL '1 day') s
LEFT JOIN LATERAL (SELECT count(*) AS gaps, coalesce(sum(to_id - from_id + 1), 0) AS ids,
                          max(detected_time) AS last_gap
                   FROM data_gaps
                   WHERE exchange = s.exchange AND symbol = s.symbol AND $__timeFilter(detected_time)) g ON true
ORDER BY s.symbol""",
                    fmt="table",
                ),
            ),
        ),
        instant_stat(
            "Order-book resyncs per symbol (10 min)",
            "sum by (symbol) (increase(tapeflow_producer_book_resyncs_total[10m]))",
            "symbol",
            question="Which books were rebuilt from a snapshot lately (each resync leaves a hole in md.book and the "
            "wall detectors)? Counted by the producer only, so read from Prometheus.",
            thresholds=(
                Threshold(1, "orange", "resynced in the last 10 minutes"),
                Threshold(5, "red", "TapeflowBookResyncStorm: more than 5 in 10 minutes"),
            ),
            width=8,
            height=9,
            unit="none",
        ),
    ),
)

# --- Watchlist (cross-venue hedged pairs) --------------------------------------------------------
COIN = Variable(
    "coin",
    "Coin",
    "SELECT DISTINCT coin FROM xv_features WHERE eval_time > now() - INTERVAL '1 day' "
    "UNION SELECT DISTINCT coin FROM xv_pair_events WHERE event_time > now() - INTERVAL '7 days' "
    "ORDER BY 1",
    multi=True,
    default=ALL,
)
_PAIR_TEXT = "p.coin || ' short ' || p.short_venue || ' / long ' || p.long_venue"
WATCHLIST = Dashboard(
    uid="tapeflow-watchlist",
    title="tapeflow · Watchlist",
    description="Cross-venue hedged pairs: the executable spreads across venues now, funding per venue "
    "pair, 12 hours of spreads with the pairs' entries and exits, the pairs and their P&L, and the "
    "watchlist strategy's signals and rejections. Spreads are swept for the feature notional, in basis "
    "points of log(sell VWAP / buy VWAP), before fees.",
    variables=(COIN,),
    time_from="now-12h",
    annotations=(
        Annotation(
            "Pair entries",
            f"""
SELECT "time", text, tags
FROM (
    SELECT DISTINCT ON (p.pair_id) p.event_time AS "time",
           'entry ' || {_PAIR_TEXT} || coalesce(' at ' || round((p.entry_spread * 1e4)::numeric, 1) || ' bp', '')
           AS text,
           p.coin || ',entry' AS tags
    FROM xv_pair_events p
    WHERE p.status = 'open' AND p.coin IN ($coin) AND $__timeFilter(p.event_time)
    ORDER BY p.pair_id, p.seq
) e
ORDER BY 1""",
            color="green",
        ),
        Annotation(
            "Pair exits",
            f"""
SELECT "time", text, tags
FROM (
    SELECT DISTINCT ON (p.pair_id) coalesce(p.closed_time, p.event_time) AS "time",
           p.status || ' ' || {_PAIR_TEXT} || ': ' || coalesce(p.close_reason, p.reason, '?') ||
           coalesce(', exit ' || round((p.exit_spread * 1e4)::numeric, 1) || ' bp', '') ||
           ', net ' || round(p.net_usd, 2) || ' USD' AS text,
           p.coin || ',exit' AS tags
    FROM xv_pair_events p
    WHERE p.status IN ('closed', 'failed') AND p.coin IN ($coin) AND $__timeFilter(p.event_time)
    ORDER BY p.pair_id, p.seq
) x
ORDER BY 1""",
        ),
    ),
    panels=(
        Panel(
            "Spread matrix (bp)",
            "table",
            width=12,
            height=8,
            decimals=2,
            question="Where is the executable spread now: the swept spread in bp of each coin (rows) selling on "
            "one venue and buying on another (columns, sell → buy), at the coin's newest evaluation in "
            "the range? (Before fees; an empty cell: a leg was missing or stale, see xv_features.missing.)",
            transformations=(
                {
                    "id": "groupingToMatrix",
                    "options": {
                        "rowField": "coin",
                        "columnField": "sell → buy",
                        "valueField": "spread bp",
                        "emptyValue": "null",
                    },
                },
            ),
            queries=(
                Sql(
                    """
SELECT f.coin, f.sell_venue || ' → ' || f.buy_venue AS "sell → buy", round((f.spread_sweep * 1e4)::numeric, 2)
       AS "spread bp"
FROM xv_features f
JOIN (SELECT coin, max(eval_time) AS t FROM xv_features
      WHERE coin IN ($coin) AND $__timeFilter(eval_time) GROUP BY coin) n ON f.coin = n.coin AND f.eval_time = n.t
ORDER BY 1, 2""",
                    fmt="table",
                ),
            ),
        ),
        Panel(
            "Funding per venue pair",
            "table",
            width=12,
            height=8,
            question="What does each hedge pay or receive in funding: per coin and pair of venues, each venue's "
            "latest funding rate (% per its interval), the difference on 8 h the hedge receives (short "
            "the first venue, long the second: the direction that receives it) and each venue's next "
            "funding time? (The newest evaluation of the pair in the range.)",
            queries=(
                Sql(
                    """
SELECT coin, sell_venue AS "short", buy_venue AS "long",
       round((sell_funding_rate * 100)::numeric, 4) AS "short rate %",
       round((buy_funding_rate * 100)::numeric, 4) AS "long rate %",
       round((funding_diff_8h * 1e4)::numeric, 2) AS "received 8h bp",
       sell_next_funding_time AS "short next funding", buy_next_funding_time AS "long next funding",
       eval_time AS "evaluated"
FROM (
    SELECT DISTINCT ON (coin, least(sell_venue, buy_venue), greatest(sell_venue, buy_venue)) *
    FROM xv_features
    WHERE coin IN ($coin) AND $__timeFilter(eval_time)
    ORDER BY coin, least(sell_venue, buy_venue), greatest(sell_venue, buy_venue), eval_time DESC,
             funding_diff_8h DESC NULLS LAST
) f
ORDER BY coin, "received 8h bp" DESC NULLS LAST""",
                    fmt="table",
                ),
            ),
        ),
        Panel(
            "Swept spread by venue pair (bp)",
            "timeseries",
            width=24,
            height=10,
            unit="none",
            decimals=1,
            question="How did the executable spread of each coin and venue pair (sell → buy) move, and where did "
            "the hedged pairs enter (green marks) and exit (red marks)?",
            options={
                "legend": {
                    "displayMode": "table",
                    "placement": "right",
                    "showLegend": True,
                    "calcs": ["lastNotNull", "max"],
                }
            },
            queries=(
                Sql("""
SELECT $__timeGroupAlias(eval_time, $__interval), coin || ' ' || sell_venue || ' → ' || buy_venue AS metric,
       avg(spread_sweep) * 1e4 AS value
FROM xv_features
WHERE coin IN ($coin) AND $__timeFilter(eval_time) AND spread_sweep IS NOT NULL
GROUP BY 1, 2 ORDER BY 1"""),
            ),
        ),
        Panel(
            "Hedged pairs",
            "table",
            width=24,
            height=8,
            question="Which pairs are open, unwinding or ended in the range: since when, held how long, at what "
            "entry and exit spread, with what net P&L (USD, after fees, slippage and funding), and why "
            "they closed? (xv_pairs_latest: each pair's newest state.)",
            queries=(
                Sql(
                    """
SELECT coin, short_venue || ' → ' || long_venue AS "short → long", status, opened_time AS opened,
       round((extract(epoch FROM coalesce(closed_time, now()) - opened_time) / 3600)::numeric, 2) AS "held h",
       round((entry_spread * 1e4)::numeric, 2) AS "entry bp", round((exit_spread * 1e4)::numeric, 2) AS "exit bp",
       round(net_usd, 2) AS "net USD", round(funding_usd, 2) AS "funding USD", close_reason, reason, pair_id
FROM xv_pairs_latest
WHERE coin IN ($coin) AND (status IN ('opening', 'open', 'unwinding') OR $__timeFilter(event_time))
ORDER BY opened_time DESC
LIMIT 200""",
                    fmt="table",
                ),
            ),
        ),
        Panel(
            "Watchlist signals and rejections",
            "table",
            width=24,
            height=8,
            question="What did the watchlist strategy decide: which candidates became signals, which were "
            "rejected at the entry re-check or by the model, and why?",
            queries=(
                Sql(
                    """
SELECT eval_time AS "time", coin, sell_venue || ' → ' || buy_venue AS "sell → buy", status, reason, strategy,
       round(z_1h::numeric, 2) AS z_1h, round((net_spread * 1e4)::numeric, 2) AS "net bp",
       round((entry_net_spread * 1e4)::numeric, 2) AS "entry net bp",
       round((funding_diff_8h * 1e4)::numeric, 2) AS "funding 8h bp",
       round((expected_pnl * 1e4)::numeric, 2) AS "expected bp", round(win_prob::numeric, 3) AS win_prob
FROM xv_signals
WHERE coin IN ($coin) AND $__timeFilter(eval_time)
ORDER BY eval_time DESC
LIMIT 200""",
                    fmt="table",
                ),
            ),
        ),
    ),
)

DASHBOARDS = (MARKET, SIGNALS, TRADING, PIPELINE, INTELLIGENCE, WATCHLIST)


# --- files ------------------------------------------------------------------------------------------------
def dashboard_files() -> dict[Path, str]:
    out = {
        OUT_DIR / f"{d.uid.removeprefix('tapeflow-')}.json": json.dumps(render(d), indent=2, ensure_ascii=False) + "\n"
        for d in DASHBOARDS
    }
    out[DOCS] = docs()
    return out


def docs() -> str:
    lines = [
        "# Grafana dashboards",
        "",
        "Generated by `python deploy/grafana/dashboards.py` from the definitions in that file; do not edit "
        "by hand (a test compares). After `docker compose up`, Grafana (http://localhost:3000) shows them in "
        "the **tapeflow** folder. SQL panels read TimescaleDB as `tapeflow_readonly`; PromQL panels read "
        "the stack's Prometheus. Every SQL query runs in the test suite on plain PostgreSQL and on "
        "TimescaleDB; every PromQL expression is parsed by promtool and its metric names and labels are "
        "checked against a scrape of the running services.",
        "",
    ]
    for d in DASHBOARDS:
        lines += [f"## {d.title.split('· ', 1)[1]} (`{d.uid}`)", "", d.description, ""]
        if d.variables:
            lines += [
                "Variables: "
                + ", ".join(f"`${v.name}` ({v.label.lower()}{', several' if v.multi else ''})" for v in d.variables)
                + ".",
                "",
            ]
        for a in d.annotations:
            lines += [f"Annotation **{a.name}**:", "", "```sql", a.sql.strip(), "```", ""]
        for p in d.panels:
            lines += [f"### {p.title}", "", f"*Question:* {p.question}", ""]
            for q in p.queries:
                lang = "sql" if isinstance(q, Sql) else "promql"
                lines += [f"```{lang}", (q.sql if isinstance(q, Sql) else q.expr).strip(), "```", ""]
            if p.thresholds:
                below = f"below {p.thresholds[0].value:g} ({p.base_color}); " if p.base_color != "green" else ""
                lines += [
                    "*Thresholds:* "
                    + below
                    + "; ".join(f"{t.value:g} ({t.color}): {t.meaning}" for t in p.thresholds)
                    + ".",
                    "",
                ]
            elif p.columns:
                lines += ["*Traffic lights per column* (green below the first step):", ""]
                lines += [
                    f"- {c.column}: " + "; ".join(f"{t.value:g} ({t.color}): {t.meaning}" for t in c.thresholds)
                    for c in p.columns
                ] + [""]
            else:
                lines += ["*Thresholds:* none (a reading, not a judgement).", ""]
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when a file is stale")
    args = parser.parse_args(argv)
    stale = []
    for path, text in dashboard_files().items():
        if not path.exists() or path.read_text() != text:
            stale.append(path)
            if not args.check:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
    for path in stale:
        print(f"{'stale' if args.check else 'wrote'} {path.relative_to(REPO)}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
