"""A generated session stored as the pipeline stores it, for the web UI's tests and benchmark.

``backtest.sources.synthetic.SyntheticSource`` makes every input as the producers publish it (trades,
books, marks, liquidations, indicators); the trades become ``md.trades`` records field for field, the
1-minute bars come from the engine's own ``BarBuilder`` (what ``bars.1m`` carries), and every record is
written through the sink's table specs (``sinks.tables``), so the rows are those a replayed session
leaves in the database. Signals are hand-made rows (the engine needs a day of warm-up to score), one per
direction, at known bar times.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import psycopg

from backtest.sources.synthetic import SyntheticSource
from sinks.partitions import ensure_partitions
from sinks.tables import table_for_topic, write_rows
from stream_apps.core.bars import BarBuilder
from stream_apps.core.units import notional_to_units, qty_to_units

TOPIC_OF_KIND = {
    "books": "md.book",
    "marks": "md.mark",
    "liquidations": "md.liquidations",
    "indicators": "md.indicators",
}
PARTITIONED = ("trades", "depth_snapshots", "liquidations", "mark_prices", "market_indicators", "bars_1m")


def trade_records(batch) -> list[dict]:
    sells = batch.taker_sell.tolist()
    out = []
    for agg, t, p, q, s in zip(
        batch.agg_id.tolist(), batch.time_ms.tolist(), batch.price.tolist(), batch.qty.tolist(), sells
    ):
        out.append(
            {
                "exchange": batch.exchange,
                "symbol": batch.symbol,
                "agg_id": agg,
                "price": p,
                "qty": q,
                "first_trade_id": agg,
                "last_trade_id": agg,
                "event_time": t,
                "trade_time": t,
                "receive_time": t + 20,
                "taker_side": "SELL" if s else "BUY",
            }
        )
    return out


def store_synthetic(
    conninfo: str, symbols: list[str], from_ms: int, to_ms: int, seed: int = 7, trades_per_s: float | None = None
) -> dict[str, int]:
    """Generate ``[from_ms, to_ms)`` and store it in the migrated database ``conninfo``; returns rows
    written per table."""
    source = SyntheticSource(symbols, from_ms, to_ms, seed, trades_per_s=trades_per_s)
    builders = {s: BarBuilder(60_000) for s in source.symbols}
    counts: dict[str, int] = {}
    with psycopg.connect(conninfo) as conn:
        lo = datetime.fromtimestamp(from_ms / 1000 - 86_400, tz=UTC)
        hi = datetime.fromtimestamp(to_ms / 1000 + 86_400 * 2, tz=UTC)
        for table in PARTITIONED:
            ensure_partitions(conn, table, lo, hi)
        conn.commit()
        for block in source.blocks():
            bars = []
            for batch in block.trades.values():
                keep = (batch.time_ms >= from_ms) & (batch.time_ms < to_ms)
                batch = type(batch).from_arrays(
                    batch.exchange,
                    batch.symbol,
                    batch.agg_id[keep],
                    batch.time_ms[keep],
                    batch.price[keep],
                    batch.qty[keep],
                    batch.taker_sell[keep],
                )
                _write(conn, "md.trades", trade_records(batch), counts)
                closed = builders[batch.symbol].update(
                    batch.time_ms,
                    batch.price,
                    qty_to_units(batch.qty),
                    ~batch.taker_sell,
                    notional_to_units(batch.price * batch.qty),
                    batch.agg_id,
                )
                bars += [b.to_record(batch.exchange, batch.symbol) for b in closed]
            _write(conn, "bars.1m", bars, counts)
            for kind, recs in block.records.items():
                time_field = "trade_time" if kind == "liquidations" else "event_time"
                _write(conn, TOPIC_OF_KIND[kind], [r for r in recs if from_ms <= r[time_field] < to_ms], counts)
            conn.commit()
        last = [b.to_record("binance", s) for s, builder in builders.items() for b in builder.close_until(to_ms)]
        _write(conn, "bars.1m", last, counts)
        conn.commit()
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE")
    return counts


def _write(conn, topic: str, records: list[dict], counts: dict[str, int]) -> None:
    if not records:
        return
    spec = table_for_topic(topic)
    counts[spec.table] = counts.get(spec.table, 0) + write_rows(conn, spec, (spec.to_row(r) for r in records))


def signal_record(symbol: str, eval_ms: int, direction: str, price: float, n: int) -> dict:
    """A scored signal as the engine publishes it on ``signals`` (values hand-picked)."""
    risk = price * 0.004
    sign = 1 if direction == "LONG" else -1
    return {
        "signal_id": f"ui-test-{symbol}-{n}",
        "strategy": "flow_scalper",
        "strategy_version": "1",
        "config_hash": "abc",
        "exchange": "binance",
        "symbol": symbol,
        "eval_time": eval_ms,
        "direction": direction,
        "tier": "standard",
        "score": 61.5,
        "factors": {"cvd": 1.0},
        "price": price,
        "atr": risk,
        "risk_distance": risk,
        "sl_price": price - sign * risk,
        "tp1_price": price + sign * risk,
        "tp2_price": price + 2 * sign * risk,
        "sl_r": -1.0,
        "tp1_r": 1.0,
        "tp2_r": 2.0,
        "is_flip": False,
        "timeout_ms": None,
    }


def store_signals(conninfo: str, records: list[dict]) -> int:
    spec = table_for_topic("signals")
    with psycopg.connect(conninfo) as conn:
        return write_rows(conn, spec, (spec.to_row(r) for r in records))


def pair_event_record(pair_id: str, coin: str, opened_ms: int, net_usd: float) -> dict:
    """A closed hedged pair's snapshot as the watchlist trader publishes it on ``xv.pairs`` (values
    hand-picked: gross - fees - slippage + funding = net, each leg half of it)."""
    gross, fees, slip, funding = net_usd + 6.0, 4.0, 1.5, -0.5
    half = {
        k: v / 2
        for k, v in {
            "gross_usd": gross,
            "fees_usd": fees,
            "slippage_usd": slip,
            "funding_usd": funding,
            "net_usd": net_usd,
        }.items()
    }
    return {
        "pair_id": pair_id,
        "seq": 2,
        "event_time": opened_ms + 60_000,
        "signal_id": f"{pair_id}-signal",
        "pair_key": f"{coin}:binance:bybit",
        "coin": coin,
        "short_venue": "binance",
        "short_symbol": f"{coin}USDT",
        "long_venue": "bybit",
        "long_symbol": f"{coin}USDT",
        "notional_usd": 10_000.0,
        "qty": 0.25,
        "status": "closed",
        "reason": None,
        "close_reason": "target",
        "opened_ms": opened_ms,
        "closed_ms": opened_ms + 60_000,
        "entry_spread": 0.0012,
        "exit_spread": 0.0002,
        "gross_usd": gross,
        "fees_usd": fees,
        "slippage_usd": slip,
        "funding_usd": funding,
        "net_usd": net_usd,
        **{f"{leg}_{k}": v for leg in ("short", "long") for k, v in half.items()},
        "leg_latency_usd": 0.0,
        "liquidation_usd": 0.0,
        "short_leg_latency_usd": 0.0,
        "short_liquidation_usd": 0.0,
        "long_leg_latency_usd": 0.0,
        "long_liquidation_usd": 0.0,
    }


def floor_index(price: float, step: float) -> int:
    """The price level a trade falls in (the UI's ``floor(price / step)``)."""
    return int(np.floor(price / step))


#: the watchlist strategy of the generated session, and the trader's window sizes for a 12-minute session
UI_STRATEGY = {
    "kind": "watchlist",
    "name": "xv_ui",
    "version": "1",
    "notional_usd": 10_000,
    "cooldown": "2m",
    "triggers": {"min_net_spread_bp": 2, "min_z": 1.5, "min_window_samples": 12},
    "exits": {"exit_spread_bp": -2},
}
UI_WINDOWS = {"slope_window_ms": 60_000, "windows": (("1h", 3_600_000, 5_000), ("12h", 43_200_000, 60_000))}


def watchlist_events(seed: int = 11, minutes: float = 12.0):
    """The generated three-venue session (``backtest.watchlist.synthetic``) of ``store_watchlist_session``."""
    from backtest.watchlist.synthetic import session

    return session(seed, minutes, coins=("BTC", "ETH"), jump_per_hour=12.0)


def store_watchlist_session(conninfo: str, seed: int = 11, minutes: float = 12.0) -> dict[str, int]:
    """A generated three-venue session (``backtest.watchlist.synthetic``) through the live watchlist
    trader, as the watchlist service runs it: its xv.features (the evaluations the trader's own state
    made) and what it published (xv.signals, xv.orders, xv.funding, xv.pairs), written through the
    sink's table specs. The strategy and window sizes are those of the watchlist backtest's generated
    session test, which opens and closes pairs in 12 minutes."""
    from execution.watchlist_trader import WatchlistTrader, cross_venue_params
    from stream_apps.watchlist.records import feature_records
    from stream_apps.watchlist.strategy import parse_watchlist_strategy

    strategy = parse_watchlist_strategy(UI_STRATEGY)
    params = cross_venue_params(strategy, **UI_WINDOWS)
    features: list[dict] = []

    class Recording(WatchlistTrader):
        def _evaluate(self, coin_features) -> None:
            features.extend(feature_records(coin_features, self.params.sweep_notional_usd))
            super()._evaluate(coin_features)

    trader = Recording(strategy, params=params)
    trader.feed(watchlist_events(seed, minutes))
    records = {"xv.features": features}
    for kind, _coin, record in trader.take():
        if kind in trader.topics:
            records.setdefault(trader.topics[kind], []).append(record)
    counts: dict[str, int] = {}
    with psycopg.connect(conninfo) as conn:
        times = [r["eval_time"] for r in features]
        lo, hi = (
            datetime.fromtimestamp(min(times) / 1000 - 86_400, tz=UTC),
            datetime.fromtimestamp(max(times) / 1000 + 86_400, tz=UTC),
        )
        for table in ("xv_features", "xv_signals", "xv_leg_orders", "xv_funding_payments", "xv_pair_events"):
            ensure_partitions(conn, table, lo, hi)
        for topic, recs in records.items():
            _write(conn, topic, recs, counts)
        conn.commit()
    return counts


#: the strategies of the planted wall evaluations (``store_wall_features``)
WALL_STRATEGIES = ("flow_scalper", "book_walls")


def store_wall_features(conninfo: str, symbol: str, from_ms: int, to_ms: int) -> int:
    """Evaluations with the book detectors' wall fields, hand-made from the stored books (the engine
    needs a day of warm-up): two per book (at its time and 1 s later: the generator's books come every
    2 s, the engine evaluates every second), for each of ``WALL_STRATEGIES``. Each side's wall is the
    book's largest level (ties: the nearer price), as ``stream_apps.core.detectors.book`` reports it:
    distance from mid in bps, USD size, age; ``book_walls`` reports no ask wall at the second
    evaluation of a book (a side without a wall has no field). Returns the rows written."""
    with psycopg.connect(conninfo) as conn:
        ensure_partitions(
            conn,
            "features",
            datetime.fromtimestamp(from_ms / 1000 - 86_400, tz=UTC),
            datetime.fromtimestamp(to_ms / 1000 + 86_400, tz=UTC),
        )
        cur = conn.execute(
            "INSERT INTO features (evaluation_id, strategy, strategy_version, config_hash, exchange, symbol, eval_time, "
            "  inputs, layer_scores, score, direction, gate, block_reason) "
            "SELECT s.strategy || ':h:' || d.exchange || ':' || d.symbol || ':' || (extract(epoch FROM e.t) * 1000)::bigint, "
            "  s.strategy, '1', 'h', d.exchange, d.symbol, e.t, jsonb_strip_nulls(jsonb_build_object('obi_10', d.obi_10, "
            "  'wall_bid_distance_bps', (m.mid - b.p) / m.mid * 10000, 'wall_bid_usd', b.p * b.q, 'wall_bid_age_s', 4.0 + e.k, "
            "  'wall_ask_distance_bps', CASE WHEN s.strategy <> 'book_walls' OR e.k = 0 THEN (a.p - m.mid) / m.mid * 10000 END, "
            "  'wall_ask_usd', CASE WHEN s.strategy <> 'book_walls' OR e.k = 0 THEN a.p * a.q END)), "
            "  '{}'::jsonb, 0, NULL, NULL, 'below_entry' "
            "FROM depth_snapshots d "
            "CROSS JOIN LATERAL (SELECT (d.bid_prices[1] + d.ask_prices[1]) / 2 AS mid) m "
            "CROSS JOIN LATERAL (SELECT p, q FROM unnest(d.bid_prices, d.bid_qtys) u(p, q) ORDER BY q DESC, p DESC LIMIT 1) b "
            "CROSS JOIN LATERAL (SELECT p, q FROM unnest(d.ask_prices, d.ask_qtys) u(p, q) ORDER BY q DESC, p LIMIT 1) a "
            "CROSS JOIN LATERAL (SELECT k, d.event_time + make_interval(secs => k) AS t FROM generate_series(0, 1) k) e "
            "CROSS JOIN unnest(%s::text[]) s(strategy) "
            "WHERE d.exchange = 'binance' AND d.symbol = %s AND d.event_time >= %s AND d.event_time < %s",
            (
                list(WALL_STRATEGIES),
                symbol,
                datetime.fromtimestamp(from_ms / 1000, tz=UTC),
                datetime.fromtimestamp(to_ms / 1000, tz=UTC),
            ),
        )
        conn.commit()
        conn.autocommit = True
        conn.execute("ANALYZE features")
        return cur.rowcount
