"""The Grafana dashboards (deploy/grafana/dashboards.py): files up to date, and every SQL query runs.

Every SQL query of every panel, variable and annotation is run against the real schema (the
migrations), on plain PostgreSQL (the session's server, as the read-only role Grafana uses) and on
TimescaleDB (the PGlite build), with Grafana's macros substituted the way Grafana 11's PostgreSQL
datasource expands them (`$__timeGroup` becomes time_bucket() when the datasource has TimescaleDB on,
as deploy/grafana/provisioning does, and floor(epoch) otherwise). A small data set is inserted first
so that each query must also return rows: a wrong join or filter fails, not only a wrong column.
PromQL panels are checked in test_metrics_contract.py.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from sinks.migrate import load_migrations
from tests.support.paths import REPO
from tests.support.pglite import DIST, needs_pglite

spec = importlib.util.spec_from_file_location("tapeflow_dashboards", REPO / "deploy" / "grafana" / "dashboards.py")
dashboards = importlib.util.module_from_spec(spec)
spec.loader.exec_module(dashboards)
model = __import__("grafana_model")  # the generator put deploy/grafana on sys.path


def time_range() -> tuple[datetime, datetime]:
    """The dashboard's range as Grafana sends it when the query runs: the last 6 h (and 5 min ahead).

    Taken when a query is expanded, not at import: the seed is written `now() - ...` when the test runs,
    which in a full suite is many minutes after collection."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    return now - timedelta(hours=6), now + timedelta(minutes=5)


INTERVAL_S = 60  # $__interval of a 6 h range on a wide panel
VALUES = {
    "exchange": ["binance"],
    "symbol": ["BTCUSDT"],
    "symbols": ["BTCUSDT", "ETHUSDT"],
    "strategy": ["v53", "v52_8signals"],
    "mode": ["paper"],
    "top": ["20"],
    "whale": ["250000"],
    "coin": ["BTC", "ETH"],
}

# A little of everything, in the last hours: minutes of bars and trades for two symbols, books,
# liquidations both ways, funding of two symbols, indicators, evaluations (one vetoed by a gate) whose
# inputs carry the book detectors' wall and iceberg fields, two whale trades (one each way), a signal,
# an open position and a closed one (with tp1), a risk halt, a backtest run, a gap, a dead letter; and
# for the watchlist: cross-venue features of two coins and three venue pairs every 5 minutes, a BTC pair
# opened 2 h ago and closed on convergence 1 h ago, an ETH pair open for 30 minutes, a signal and a rejection.
SEED = """
INSERT INTO bars_1m (exchange, symbol, open_time, close_time, open, high, low, close, volume, buy_volume,
                     sell_volume, quote_volume, vwap, trade_count, first_agg_id, last_agg_id)
SELECT 'binance', s, date_trunc('minute', now()) - make_interval(mins => m),
       date_trunc('minute', now()) - make_interval(mins => m - 1), 100 + m, 101 + m, 99 + m, 100.5 + m, 10, 6, 4,
       1000, 100.2 + m, 5, 1000 * m, 1000 * m + 4
FROM generate_series(1, 300) m, unnest(ARRAY['BTCUSDT', 'ETHUSDT']) s;
INSERT INTO trades (exchange, symbol, agg_id, price, qty, first_trade_id, last_trade_id, event_time, trade_time,
                    receive_time, taker_side)
SELECT 'binance', 'BTCUSDT', m, 100 + m, 1.5, m, m, t, t, t, CASE WHEN m % 3 = 0 THEN 'SELL' ELSE 'BUY' END
FROM generate_series(1, 300) m, LATERAL (SELECT now() - make_interval(mins => m) AS t) x;
INSERT INTO trades (exchange, symbol, agg_id, price, qty, first_trade_id, last_trade_id, event_time, trade_time,
                    receive_time, taker_side) VALUES
    ('binance', 'BTCUSDT', 1001, 60000, 5, 1001, 1003, now() - INTERVAL '45 minutes', now() - INTERVAL '45 minutes',
     now() - INTERVAL '45 minutes', 'BUY'),
    ('binance', 'ETHUSDT', 1002, 3000, 120, 1004, 1009, now() - INTERVAL '25 minutes', now() - INTERVAL '25 minutes',
     now() - INTERVAL '25 minutes', 'SELL');
INSERT INTO depth_snapshots (exchange, symbol, last_update_id, event_time, receive_time, bid_prices, bid_qtys,
                             ask_prices, ask_qtys, obi_10)
SELECT 'binance', 'BTCUSDT', m, now() - make_interval(mins => m), now() - make_interval(mins => m),
       ARRAY[100.0], ARRAY[2.0], ARRAY[100.1], ARRAY[1.0], 0.33
FROM generate_series(1, 30) m;
INSERT INTO liquidations (exchange, symbol, side, liquidated_side, price, avg_price, qty, filled_qty, usd_value,
                          event_time, trade_time, receive_time) VALUES
    ('binance', 'BTCUSDT', 'SELL', 'LONG', 150, 150.5, 1000, 1000, 150500, now() - INTERVAL '90 minutes',
     now() - INTERVAL '90 minutes', now() - INTERVAL '90 minutes'),
    ('binance', 'BTCUSDT', 'BUY', 'SHORT', 120, 120.1, 10, 10, 1201, now() - INTERVAL '30 minutes',
     now() - INTERVAL '30 minutes', now() - INTERVAL '30 minutes');
INSERT INTO mark_prices (exchange, symbol, mark_price, index_price, funding_rate, next_funding_time, event_time,
                         receive_time)
SELECT 'binance', s, 100, 100, CASE s WHEN 'BTCUSDT' THEN 0.0001 ELSE 0.0012 END, now() + INTERVAL '1 hour',
       now() - make_interval(mins => m * 30), now() - make_interval(mins => m * 30)
FROM generate_series(1, 8) m, unnest(ARRAY['BTCUSDT', 'ETHUSDT']) s;
INSERT INTO market_indicators (exchange, symbol, kind, value, period, event_time, receive_time)
SELECT 'binance', 'BTCUSDT', k, 1.2, '5m', now() - make_interval(mins => m * 5), now() - make_interval(mins => m * 5)
FROM generate_series(1, 12) m,
     unnest(ARRAY['open_interest', 'long_short_account_ratio', 'top_trader_position_ratio', 'taker_buy_sell_ratio']) k;
INSERT INTO features (evaluation_id, strategy, strategy_version, config_hash, exchange, symbol, eval_time, inputs,
                      layer_scores, score, direction, gate, block_reason)
SELECT st || ':h:binance:' || s || ':' || m, st, '1', 'h', 'binance', s, now() - make_interval(mins => m),
       '{"cvd_fast": 12.5, "cvd_mid": 40.0, "obi": 0.33, "funding_rate": 0.0001, "oi_change": 0.01,
         "long_short_ratio": 1.2, "atr_price_ratio": 0.004, "wall_bid_usd": 1250000, "wall_bid_distance_bps": 8.5,
         "wall_bid_age_s": 42, "wall_pulled_bid": 1, "wall_pulled_ask": 0, "wall_filled_bid": 0, "wall_filled_ask": 2,
         "iceberg_refills_bid": 0, "iceberg_refills_ask": 3, "iceberg_usd_bid": 0, "iceberg_usd_ask": 310000}',
       '{"direction": 45, "crowding": 15, "environment": 10, "auxiliary": null}', 70 + m % 20,
       'LONG', CASE WHEN m % 4 = 0 THEN 'obi' END, CASE WHEN m % 4 = 0 THEN 'gate' WHEN m % 5 = 0 THEN 'tier' END
FROM generate_series(1, 60) m, unnest(ARRAY['BTCUSDT', 'ETHUSDT']) s, unnest(ARRAY['v53', 'v52_8signals']) st;
INSERT INTO signals (signal_id, strategy, strategy_version, config_hash, exchange, symbol, eval_time, direction,
                     tier, score, factors, price, atr, risk_distance, sl_price, tp1_price, tp2_price, sl_r, tp1_r,
                     tp2_r, is_flip) VALUES
    ('v53:h:binance:BTCUSDT:1', 'v53', '1', 'h', 'binance', 'BTCUSDT', now() - INTERVAL '2 hours', 'LONG', 'heavy',
     87.5, '{"direction": 55}', 100, 1, 1.5, 98.5, 102.25, 104.5, -1, 1.5, 3, false);
INSERT INTO positions (position_id, signal_id, strategy, strategy_version, config_hash, exchange, symbol, mode,
                       event, direction, tier, entry_price, qty, r_usd, sl_price, tp1_price, tp2_price, exit_price,
                       exit_reason, pnl_r_gross, pnl_r_net, fees_r, slippage_r, event_time) VALUES
    ('pos-1', 'v53:h:binance:BTCUSDT:1', 'v53', '1', 'h', 'binance', 'BTCUSDT', 'paper', 'opened', 'LONG', 'heavy',
     100, 2, 300, 98.5, 102.25, 104.5, NULL, NULL, NULL, NULL, 0.05, 0, now() - INTERVAL '2 hours'),
    ('pos-1', 'v53:h:binance:BTCUSDT:1', 'v53', '1', 'h', 'binance', 'BTCUSDT', 'paper', 'tp1', 'LONG', 'heavy',
     100, 2, 300, 98.5, 102.25, 104.5, 102.25, NULL, NULL, NULL, 0.05, 0, now() - INTERVAL '100 minutes'),
    ('pos-1', 'v53:h:binance:BTCUSDT:1', 'v53', '1', 'h', 'binance', 'BTCUSDT', 'paper', 'closed', 'LONG', 'heavy',
     100, 2, 300, 98.5, 102.25, 104.5, 104.5, 'tp', 2.25, 2.1, 0.15, 0, now() - INTERVAL '80 minutes'),
    ('pos-2', 'v53:h:binance:ETHUSDT:2', 'v53', '1', 'h', 'binance', 'ETHUSDT', 'paper', 'opened', 'SHORT',
     'standard', 100, 1, 200, 101, 99, 97, NULL, NULL, NULL, NULL, 0.05, 0, now() - INTERVAL '20 minutes'),
    ('pos-3', 'v52_8signals:h:binance:ETHUSDT:3', 'v52_8signals', '1', 'h', 'binance', 'ETHUSDT', 'paper',
     'opened', 'LONG', 'standard', 100, 1, 200, 99, 101, 103, NULL, NULL, NULL, NULL, 0.05, 0,
     now() - INTERVAL '3 hours'),
    ('pos-3', 'v52_8signals:h:binance:ETHUSDT:3', 'v52_8signals', '1', 'h', 'binance', 'ETHUSDT', 'paper',
     'closed', 'LONG', 'standard', 100, 1, 200, 99, 101, 103, 99, 'sl', -1, -1.1, 0.1, 0,
     now() - INTERVAL '150 minutes');
INSERT INTO outcome_labels (source, sample_kind, sample_id, horizon_h, strategy, config_hash, exchange, symbol,
                            direction, taken, position_id, t0, horizon_time, price_at_horizon, qty_open,
                            realized_pnl, unrealized_pnl, gross_pnl, fees, funding, net_pnl, basis, net_roi,
                            threshold, label, computed_at) VALUES
    ('paper', 'trade', 'pos-1', 12, 'v53', 'h', 'binance', 'BTCUSDT', 'LONG', true, 'pos-1',
     now() - INTERVAL '2 hours', now() + INTERVAL '10 hours', 104.5, 0, 9, 0, 9, 0.2, 0.01, 8.79, 200, 0.04395,
     0.005, 'pos', now()),
    ('paper', 'signal', 'v53:h:binance:ETHUSDT:9', 12, 'v53', 'h', 'binance', 'ETHUSDT', 'SHORT', false, NULL,
     now() - INTERVAL '1 hour', now() + INTERVAL '11 hours', 101, 1, 0, -1, -1, 0.05, 0, -1.05, 100, -0.0105,
     0.005, 'neg', now());
INSERT INTO model_health (time, strategy, role, config_rev, model_sha256, sources, horizon_h, window_trades, samples,
                          positives, auc, brier, log_loss, status, reason) VALUES
    (now() - INTERVAL '2 hours', 'v53', 'active', 1, 'ab', 'paper,live', 12, 100, 100, 41, 0.61, 0.23, 0.65,
     'healthy', 'AUC 0.610, Brier 0.2300 over the last 100 trades'),
    (now() - INTERVAL '1 hour', 'v53', 'active', 1, 'ab', 'paper,live', 12, 100, 100, 40, 0.52, 0.26, 0.72,
     'unhealthy', 'AUC 0.520 < 0.55 and Brier 0.2600 > 0.25 over the last 100 trades');
INSERT INTO risk_events (scope, mode, decision, state, reason, daily_pnl_r, consecutive_losses, paused_until,
                         event_time) VALUES
    ('global', 'paper', 'halt', 'halted', 'kill_switch', -1.5, 2, NULL, now() - INTERVAL '10 minutes'),
    ('strategy:v53:binance:BTCUSDT', 'paper', 'block', 'halted', 'kill_switch', -1.5, 2, NULL,
     now() - INTERVAL '9 minutes');
INSERT INTO backtest_runs (run_id, strategy, strategy_version, config_hash, config, source, exchange, symbols,
                           from_time, to_time, status, started_at, finished_at, trades, wins, losses, win_rate,
                           gross_r, fees_r, net_r, profit_factor, max_drawdown_r, sharpe) VALUES
    ('bt-1', 'v53', '1', 'h', '{}', 'db', 'binance', ARRAY['BTCUSDT'], '2024-01-01', '2024-01-31', 'finished',
     now() - INTERVAL '1 hour', now() - INTERVAL '50 minutes', 40, 18, 22, 0.45, 12.5, 2.1, 10.4, 1.4, 4.2, 1.1);
INSERT INTO data_gaps (exchange, symbol, stream, from_id, to_id, detected_time, reason) VALUES
    ('binance', 'BTCUSDT', 'aggTrade', 500, 509, now() - INTERVAL '40 minutes', 'rest_unavailable');
INSERT INTO pipeline_errors (source_topic, source_partition, source_offset, raw_key, raw_value, error, stage,
                             event_time, content_sha256) VALUES
    ('md.trades', 0, 42, NULL, '\\x00ff', 'InvalidAvro: bad magic byte', 'sink', now() - INTERVAL '5 minutes',
     '\\x01');
INSERT INTO xv_features (feature_id, coin, eval_time, sell_venue, buy_venue, sell_symbol, buy_symbol,
                         sweep_notional_usd, spread_top, spread_sweep, funding_diff, funding_diff_8h,
                         sell_funding_rate, buy_funding_rate, sell_next_funding_time, buy_next_funding_time, stats,
                         missing)
SELECT c || ':' || m || ':' || v.s || ':' || v.b, c, date_trunc('minute', now()) - make_interval(mins => m), v.s, v.b,
       c || 'USDT', c || 'USDT', 10000, 0.0004 * sin(m / 30.0), 0.0003 * sin(m / 30.0) - 0.0001, v.diff, v.diff,
       0.0001 + v.diff, 0.0001, now() + INTERVAL '1 hour', now() + INTERVAL '3 hours', '{}', '{}'
FROM generate_series(0, 300, 5) m, unnest(ARRAY['BTC', 'ETH']) c,
     (VALUES ('okx', 'binance', 0.00005), ('binance', 'okx', -0.00005), ('bybit', 'binance', 0.0)) v(s, b, diff);
INSERT INTO xv_pair_events (pair_id, seq, event_time, signal_id, pair_key, coin, short_venue, short_symbol,
                            long_venue, long_symbol, notional_usd, qty, status, reason, close_reason, opened_time,
                            closed_time, entry_spread, exit_spread, gross_usd, fees_usd, slippage_usd, funding_usd,
                            net_usd, short_gross_usd, short_fees_usd, short_slippage_usd, short_funding_usd,
                            short_net_usd, long_gross_usd, long_fees_usd, long_slippage_usd, long_funding_usd,
                            long_net_usd)
SELECT p.pair_id, p.seq, now() - p.ago, 'sig-' || p.pair_id, p.coin || ':binance/okx', p.coin, 'okx',
       p.coin || '-USDT-SWAP', 'binance', p.coin || 'USDT', 10000, 0.25, p.status, NULL, p.close_reason,
       now() - p.opened_ago, CASE WHEN p.status IN ('closed', 'failed') THEN now() - p.ago END, 0.0029, p.exit_spread,
       27.8, 19.9, 0.6, -0.3, p.net, 40.2, 10, 0.3, -1.5, 31.4, -12.4, 9.9, 0.3, 1.2, -23.8
FROM (VALUES ('pair-1', 1, 'BTC', 'opening', NULL, INTERVAL '2 hours', INTERVAL '2 hours', NULL::double precision, 0.0),
             ('pair-1', 2, 'BTC', 'open', NULL, INTERVAL '2 hours', INTERVAL '2 hours', NULL, -4.0),
             ('pair-1', 3, 'BTC', 'closed', 'convergence', INTERVAL '1 hour', INTERVAL '2 hours', 0.0002, 7.6),
             ('pair-2', 1, 'ETH', 'open', NULL, INTERVAL '30 minutes', INTERVAL '30 minutes', NULL, -3.9))
     p(pair_id, seq, coin, status, close_reason, ago, opened_ago, exit_spread, net);
INSERT INTO xv_signals (signal_id, strategy, strategy_version, config_hash, coin, eval_time, sell_venue, buy_venue,
                        notional_usd, status, reason, z_1h, spread_sweep, net_spread, funding_diff_8h, entry_spread,
                        entry_net_spread, expected_pnl, win_prob, imputed) VALUES
    ('sig-pair-1', 'xv_convergence', '1', 'h', 'BTC', now() - INTERVAL '2 hours', 'okx', 'binance', 10000, 'signal',
     NULL, 2.9, 0.003, 0.001, 0.00005, 0.0029, 0.0009, 0.0007, 0.64, '{}'),
    ('sig-eth-x', 'xv_convergence', '1', 'h', 'ETH', now() - INTERVAL '50 minutes', 'okx', 'binance', 10000,
     'rejected', 'recheck: okx book 3.1 s old at entry, limit 2.0 s', 2.7, 0.0028, 0.0008, NULL, NULL, NULL, NULL,
     NULL, '{}');
"""


# --- Grafana's macros -----------------------------------------------------------------------------------------
def _quote(ts: datetime) -> str:
    return "'" + ts.strftime("%Y-%m-%dT%H:%M:%SZ") + "'"


def _seconds(interval: str) -> int:
    value = interval.strip().strip("'")
    if value == "$__interval":
        return INTERVAL_S
    number, unit = re.fullmatch(r"(\d+)([smhd])", value).groups()
    return int(number) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit]


def expand(sql: str, variables: dict[str, model.Variable], timescale: bool) -> str:
    """What Grafana sends to the database for `sql` (Grafana 11, PostgreSQL datasource)."""

    def group(column: str, interval: str) -> str:
        s = _seconds(interval)
        return f"time_bucket('{s:.3f}s',{column})" if timescale else f"floor(extract(epoch from {column})/{s})*{s}"

    out = re.sub(r"\$__timeGroupAlias\(([^,]+),([^)]+)\)", lambda m: group(m[1].strip(), m[2]) + ' AS "time"', sql)
    out = re.sub(r"\$__timeGroup\(([^,]+),([^)]+)\)", lambda m: group(m[1].strip(), m[2]), out)
    time_from, time_to = time_range()
    out = re.sub(
        r"\$__timeFilter\(([^)]+)\)", lambda m: f"{m[1].strip()} BETWEEN {_quote(time_from)} AND {_quote(time_to)}", out
    )
    out = out.replace("$__timeFrom()", _quote(time_from)).replace("$__timeTo()", _quote(time_to))
    out = out.replace("$__interval", f"{INTERVAL_S}s")
    for name in sorted(variables, key=len, reverse=True):  # $symbols before $symbol
        values = VALUES[name]
        text = ",".join(f"'{v}'" for v in values) if variables[name].multi else values[0]
        out = out.replace(f"${{{name}}}", text).replace(f"${name}", text)
    assert "$" not in out, f"unexpanded macro or variable in:\n{out}"
    return out


def queries(timescale: bool) -> dict[str, tuple[str, str]]:
    """Every SQL query of the dashboards by a readable id: (expanded SQL, format)."""
    out = {}
    for d in dashboards.DASHBOARDS:
        variables = {v.name: v for v in d.variables}
        for v in d.variables:
            if v.sql:  # not a fixed list of choices
                out[f"{d.uid} variable {v.name}"] = (expand(v.sql, variables, timescale), "table")
        for a in d.annotations:
            out[f"{d.uid} annotation {a.name}"] = (expand(a.sql, variables, timescale), "table")
        for p in d.panels:
            for i, q in enumerate(p.queries):
                if isinstance(q, model.Sql):
                    out[f"{d.uid} / {p.title} / {chr(65 + i)}"] = (expand(q.sql, variables, timescale), q.fmt)
    return out


def check_results(results: dict[str, dict]) -> None:
    failures = []
    for qid, (_, fmt) in queries(False).items():
        r = results[qid]
        if "error" in r:
            failures.append(f"{qid}: {r['error']}")
        elif r["rows"] == 0:
            failures.append(f"{qid}: no rows")
        elif fmt == "time_series" and r["columns"][0] != "time":
            failures.append(f"{qid}: a time series needs `time` first, got {r['columns']}")
    assert not failures, "\n".join(failures)


# --- the files ---------------------------------------------------------------------------------------------
def test_provisioned_dashboards_and_docs_are_generated_from_the_definitions():
    assert dashboards.main(["--check"]) == 0, "run `python deploy/grafana/dashboards.py` and commit the result"
    provisioned = sorted(p.name for p in (REPO / "deploy" / "grafana" / "dashboards").iterdir())
    assert provisioned == [
        "intelligence.json",
        "market.json",
        "pipeline.json",
        "signals.json",
        "trading.json",
        "watchlist.json",
    ]


def test_dashboards_are_the_six_asked_for_with_their_panels():
    titles = {d.title: [p.title for p in d.panels] for d in dashboards.DASHBOARDS}
    assert set(titles) == {
        "tapeflow · Market",
        "tapeflow · Signals",
        "tapeflow · Trading",
        "tapeflow · Pipeline health",
        "tapeflow · Intelligence",
        "tapeflow · Watchlist",
    }
    panels = {t for ts in titles.values() for t in ts}
    for wanted in (
        "Price and liquidations",
        "CVD fast (30m) and mid (4h)",
        "Order-book imbalance (top 10 levels)",
        "Funding rate across symbols",
        "Open interest",
        "Long/short ratios",
        "Volume by taker side",
        "Signal timeline",
        "Score by layer",
        "Gate vetoes by reason",
        "Latest features per symbol",
        "Equity in R",
        "Win rate",
        "Profit factor",
        "Max drawdown",
        "Open positions",
        "Closed trades by exit reason",
        "Fees and slippage in R",
        "Backtest runs side by side",
        "Records published per second",
        "Consumer lag",
        "Market-data freshness",
        "Trade gaps",
        "Dead letters per second",
        "Order-book resyncs (10 min)",
        "Latencies (p99)",
        "Funding heatmap: top contracts by 24 h volume",
        "Open interest change per symbol",
        "Liquidated USD by side",
        "Whale flow",
        "Whale trades",
        "Order-book walls and icebergs now",
        "Data quality per symbol",
        "Order-book resyncs per symbol (10 min)",
        "Spread matrix (bp)",
        "Funding per venue pair",
        "Swept spread by venue pair (bp)",
        "Hedged pairs",
        "Watchlist signals and rejections",
    ):
        assert wanted in panels, wanted
    # the signal timeline lives in Signals only; Intelligence points to it instead of repeating it
    intelligence = next(d for d in dashboards.DASHBOARDS if d.uid == "tapeflow-intelligence")
    assert "Signal timeline" not in titles["tapeflow · Intelligence"] and "Signal timeline" in intelligence.description


def test_fixed_choice_variables_render_as_custom_variables_with_their_default():
    doc = json.loads((REPO / "deploy" / "grafana" / "dashboards" / "intelligence.json").read_text())
    by_name = {v["name"]: v for v in doc["templating"]["list"]}
    assert by_name["whale"]["type"] == "custom" and by_name["whale"]["current"]["value"] == "250000"
    assert [o["value"] for o in by_name["top"]["options"] if o["selected"]] == ["20"]
    assert by_name["symbols"]["type"] == "query" and by_name["symbols"]["current"]["value"] == ["$__all"]


def test_dashboard_json_is_what_grafana_provisions():
    uids = set()
    for path in (REPO / "deploy" / "grafana" / "provisioning" / "datasources").glob("*.yml"):
        uids |= set(re.findall(r"uid: (\S+)", path.read_text()))
    for path in sorted((REPO / "deploy" / "grafana" / "dashboards").glob("*.json")):
        doc = json.loads(path.read_text())
        ids = [p["id"] for p in doc["panels"]]
        assert len(ids) == len(set(ids)), path
        for p in doc["panels"]:
            assert p["description"] and p["targets"], (path.name, p["title"])
            assert p["datasource"]["uid"] in uids, (path.name, p["title"])
            assert p["gridPos"]["x"] + p["gridPos"]["w"] <= 24
            for t in p["targets"]:
                assert t["datasource"]["uid"] == p["datasource"]["uid"]
        used = set(re.findall(r"\$\{?([a-z]+)\b", json.dumps([p["targets"] for p in doc["panels"]])))
        defined = {v["name"] for v in doc["templating"]["list"]}
        assert used <= defined, f"{path.name}: undefined variables {used - defined}"


# --- the SQL, on both engines ----------------------------------------------------------------------------
@pytest.mark.integration
def test_every_sql_query_runs_on_plain_postgresql_as_grafanas_role(migrated_database):
    with psycopg.connect(migrated_database, autocommit=True) as conn:
        conn.execute(SEED)
        conn.execute("SET ROLE tapeflow_readonly")  # what Grafana logs in as: SELECT only
        results = {}
        for qid, (sql, _) in queries(False).items():
            try:
                cur = conn.execute(sql)
                results[qid] = {"rows": len(cur.fetchall()), "columns": [c.name for c in cur.description]}
            except psycopg.Error as exc:
                results[qid] = {"error": str(exc).strip().splitlines()[0]}
        check_results(results)
        watchlist = {
            qid.removeprefix("tapeflow-watchlist").strip(" /"): conn.execute(sql).fetchall()
            for qid, (sql, _) in queries(False).items()
            if qid.startswith("tapeflow-watchlist")
        }
    # the seed's pairs: entries where each became open (pair-1 once, though two changes say open), the
    # exit where pair-1 closed, each pair once in the table at its newest state
    assert [r[2] for r in watchlist["annotation Pair entries"]] == ["BTC,entry", "ETH,entry"]
    ((_, exit_text, exit_tags),) = watchlist["annotation Pair exits"]
    assert exit_tags == "BTC,exit" and exit_text == (
        "closed BTC short okx / long binance: convergence, exit 2.0 bp, net 7.60 USD"
    )
    assert sorted((r[0], r[1], r[2]) for r in watchlist["Hedged pairs / A"]) == [
        ("BTC", "okx → binance", "closed"),
        ("ETH", "okx → binance", "open"),
    ]
    matrix = watchlist["Spread matrix (bp) / A"]  # rows (coin, sell → buy, bp): 2 coins x 3 venue pairs
    assert [(r[0], r[1]) for r in matrix] == [
        (c, p) for c in ("BTC", "ETH") for p in ("binance → okx", "bybit → binance", "okx → binance")
    ]


SCRIPT = r"""
import { PGlite } from '__DIST__/index.js';
import { timescaledb } from '__DIST__/timescaledb/index.js';
import { readFileSync } from 'node:fs';
const input = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const db = await PGlite.create({ extensions: { timescaledb } });
await db.exec('CREATE EXTENSION IF NOT EXISTS timescaledb');
for (const m of input.migrations) await db.exec('BEGIN;\n' + m + '\n;COMMIT;');
await db.exec(input.seed);
const out = {};
for (const [id, sql] of Object.entries(input.queries)) {
  try { const r = await db.query(sql); out[id] = { rows: r.rows.length, columns: r.fields.map(f => f.name) }; }
  catch (e) { out[id] = { error: e.message }; }
}
console.log(JSON.stringify(out));
"""


@needs_pglite
def test_every_sql_query_runs_on_timescaledb(tmp_path):
    migrations = [m.sql for m in load_migrations() if m.version != 1]  # PGlite is single-user: no roles
    (tmp_path / "input.json").write_text(
        json.dumps(
            {"migrations": migrations, "seed": SEED, "queries": {qid: sql for qid, (sql, _) in queries(True).items()}}
        )
    )
    script = tmp_path / "run.mjs"
    script.write_text(SCRIPT.replace("__DIST__", DIST.as_posix()))
    proc = subprocess.run(
        ["node", str(script), str(tmp_path / "input.json")], capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    check_results(json.loads(proc.stdout.strip().splitlines()[-1]))
