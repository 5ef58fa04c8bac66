"""A backtest's outcome labels (`backtest.outcome_labels`) against the live path on the same inputs.

A 3-hour synthetic session (06:00-09:00 UTC, so the 08:00 funding settlement falls inside) runs through
the backtest with the label tape. Its labels at 1 h and 2 h must equal (1) the labels computed from
every trade of the session (the tape keeps only some: the answers must not change), and (2) what the
live job (`review.label_job`) writes after the session's records are stored the way the sink stores
them (the sink's own record-to-row converters: signals, positions, fills, trades, marks)."""

from __future__ import annotations

import math
from decimal import Decimal

import numpy as np
import psycopg
import pytest
from psycopg.rows import dict_row

from backtest.outcome_labels import LabelTape, label_source, run_labels, store_labels
from backtest.runner import BacktestRunner
from backtest.sources.synthetic import SyntheticSource
from execution.config import ExecutorConfig
from review.label_job import label_range, ms
from review.labels import HOUR_MS, LabelParams, PricePath, label_samples, samples_from_records
from sinks.tables import TOPIC_TABLES, write_rows
from stream_apps.core.events import TradeBatch
from stream_apps.core.strategy import parse_strategy

START = 1_704_088_800_000  # 2024-01-01 06:00 UTC
END = START + 3 * HOUR_MS
SYMBOLS = ["BTCUSDT", "ETHUSDT"]
PARAMS = LabelParams(horizons_h=(1, 2))
STRATEGY = {
    "name": "ws_only",
    "version": "1",
    "windows": {"cvd_fast": "5m", "cvd_mid": "20m"},
    "warmup": "30m",
    "weights": {
        "direction": 55,
        "crowding": 0,
        "environment": 0,
        "confirmation": 15,
        "auxiliary": 0,
        "funding": 5,
        "liquidation": 5,
    },
    "thresholds": {"entry": 55, "heavy": 70, "flip": 55},
    "cooldown": "3m",
    "exits": {"sl_atr_mult": 1.0, "tp1_r": 0.6, "tp2_r": 1.2, "timeout_min": 20},
}
# one position per slot: later signals of a busy slot are vetoed (position_open), so both kinds occur
EXECUTOR = {
    "risk": {
        "max_signal_age_s": 1e9,
        "stale_market_data_s": 1e9,
        "daily_loss_limit_r": 1000,
        "max_consecutive_losses": 1000,
    }
}


def source() -> SyntheticSource:
    return SyntheticSource(SYMBOLS, START, END, seed=5, trades_per_s={"BTCUSDT": 1.0, "ETHUSDT": 0.7})


@pytest.fixture(scope="module")
def run():
    tape = LabelTape(source())
    runner = BacktestRunner([parse_strategy(STRATEGY)], ExecutorConfig.model_validate(EXECUTOR), account="shared")
    result = runner.run(tape)
    return runner, tape, result


def test_backtest_labels_cover_both_kinds_and_funding_and_equal_those_from_every_trade(run):
    runner, tape, result = run
    labels = run_labels(runner, tape, PARAMS, result.end_ms)
    kinds = {(lab.kind, lab.taken) for lab in labels}
    assert kinds == {("signal", True), ("signal", False), ("trade", True)}, kinds
    assert any(lab.funding != 0 for lab in labels), "no label charged the 08:00 funding"
    assert {lab.horizon_h for lab in labels} == {1, 2}

    every: dict[tuple[str, str], tuple[list[int], list[float]]] = {}
    for piece in source().slices():
        for b in piece.trades.values():
            t, p = every.setdefault((b.exchange, b.symbol), ([], []))
            t += b.time_ms.tolist()
            p += b.price.tolist()
    kept = sum(len(x) for parts in tape._times.values() for x in parts)
    assert kept < sum(len(t) for t, _ in every.values())
    full = {m: PricePath(t, p) for m, (t, p) in every.items()}
    events = runner.position_events()
    fills = [f for book in runner.accounts.books.values() for f in book.sink.fills]
    samples = samples_from_records(runner.signals, [e for e in events if e["event"] == "opened"], fills, runner.config)
    assert label_samples(samples, full, tape.settlements(), PARAMS, result.end_ms) == labels


def test_tape_answers_like_every_trade_on_repeated_prices_and_split_minutes():
    rng = np.random.default_rng(3)
    n = 5000
    times = np.sort(rng.integers(0, 3 * HOUR_MS, n)) + START
    prices = np.round(100 + np.cumsum(rng.choice([-1, 0, 0, 0, 1], n)) * 0.5, 1)  # mostly unchanged
    tape = LabelTape(source())
    from backtest.inputs import MarketSlice

    cuts = [0, 1234, 1235, 2500, n]  # slices that split minutes
    for lo, hi in zip(cuts, cuts[1:], strict=False):
        batch = TradeBatch.from_arrays(
            "binance",
            "BTCUSDT",
            np.arange(lo, hi),
            times[lo:hi],
            prices[lo:hi],
            np.ones(hi - lo),
            np.zeros(hi - lo, dtype=bool),
        )
        tape.observe(MarketSlice(int(times[lo]), int(times[hi - 1]) + 1, trades={"binance:BTCUSDT": batch}))
    kept = tape.prices()[("binance", "BTCUSDT")]
    full = PricePath(times.tolist(), prices.tolist())
    assert len(kept._times) < n / 2
    for q in rng.integers(START - 60_000, END + HOUR_MS, 4000).tolist() + times[::7].tolist():
        q = int(q)
        got, want = kept.at(q), full.at(q)
        assert (got is None) == (want is None)
        if want is not None:
            assert got[1] == want[1] and (q - got[0] > HOUR_MS) == (q - want[0] > HOUR_MS)
        assert kept.reaches(q) == full.reaches(q)


def _close(a, b) -> bool:
    """Equal; numbers to 1e-12 relative: fills.fee is numeric, stored from the record's double with 15
    significant digits (0004), so a fee read back can differ from the run's in the 15th digit."""
    if isinstance(a, float | Decimal) or isinstance(b, float | Decimal):
        return math.isclose(float(a), float(b), rel_tol=1e-12, abs_tol=1e-9)
    return a == b


def test_live_job_on_the_stored_records_writes_the_backtest_labels(run, migrated_database):
    runner, tape, result = run
    labels = run_labels(runner, tape, PARAMS, result.end_ms)
    fills = [f for book in runner.accounts.books.values() for f in book.sink.fills]
    with psycopg.connect(migrated_database, autocommit=True) as conn:
        write_rows(conn, TOPIC_TABLES["signals"], map(TOPIC_TABLES["signals"].to_row, runner.signals))
        write_rows(conn, TOPIC_TABLES["positions"], map(TOPIC_TABLES["positions"].to_row, runner.position_events()))
        write_rows(conn, TOPIC_TABLES["fills"], map(TOPIC_TABLES["fills"].to_row, fills))
        marks, trades = [], []
        for piece in source().slices():
            marks += piece.marks
            for b in piece.trades.values():
                for agg, t, p, q, sell in zip(
                    b.agg_id.tolist(),
                    b.time_ms.tolist(),
                    b.price.tolist(),
                    b.qty.tolist(),
                    b.taker_sell.tolist(),
                    strict=True,
                ):
                    trades.append(
                        {
                            "exchange": b.exchange,
                            "symbol": b.symbol,
                            "agg_id": agg,
                            "price": p,
                            "qty": q,
                            "first_trade_id": agg,
                            "last_trade_id": agg,
                            "event_time": t,
                            "trade_time": t,
                            "receive_time": t,
                            "taker_side": "SELL" if sell else "BUY",
                        }
                    )
        write_rows(conn, TOPIC_TABLES["md.trades"], map(TOPIC_TABLES["md.trades"].to_row, trades))
        write_rows(conn, TOPIC_TABLES["md.mark"], map(TOPIC_TABLES["md.mark"].to_row, marks))
    config = ExecutorConfig.model_validate(EXECUTOR)
    done = label_range(migrated_database, ["paper"], START, END, params=PARAMS, config=config, now_ms=result.end_ms)
    assert done.written == len(labels) > 0
    store_labels(migrated_database, result.run_id, labels, result.finished_at_ms)
    with psycopg.connect(migrated_database) as conn, conn.cursor(row_factory=dict_row) as cur:
        cur.execute("SELECT * FROM outcome_labels ORDER BY sample_kind, sample_id, horizon_h, source")
        rows = cur.fetchall()
    live = [r for r in rows if r["source"] == "paper"]
    backtest = [r for r in rows if r["source"] == label_source(result.run_id)]
    assert len(live) == len(backtest) == len(labels)
    for a, b in zip(live, backtest, strict=True):
        for col in a:
            if col not in ("source", "computed_at"):
                assert _close(a[col], b[col]), (col, a, b)
    assert {(r["sample_kind"], r["sample_id"], r["horizon_h"]) for r in live} == {
        (lab.kind, lab.sample_id, lab.horizon_h) for lab in labels
    }
    assert min(ms(r["t0"]) for r in live) >= START
