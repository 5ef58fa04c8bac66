"""The outcome-label job (`review.label_job`) on a migrated PostgreSQL with planted signals, positions,
fills, trades and marks: it writes exactly the hand-computed rows, a second run writes nothing and
leaves them as they were, and a recompute replaces them with the same numbers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import psycopg
import pytest
from psycopg.types.json import Jsonb

from execution.client_ids import client_order_id, position_id
from execution.config import ExecutorConfig
from review.label_job import label_range, labels_of, run_due
from review.labels import HOUR_MS, LabelParams

T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC
H = HOUR_MS
NOW = T0 + 15 * H
SIG_A = "s:h:binance:BTCUSDT:1704067200000:LONG"  # taken
SIG_B = "s:h:binance:BTCUSDT:1704074400000:SHORT"  # vetoed
POS_A = position_id(SIG_A)


def ts(ms: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)


def plant(conn: psycopg.Connection) -> None:
    for sid, t, direction, price, risk in ((SIG_A, T0, "LONG", 100.0, 2.0), (SIG_B, T0 + 2 * H, "SHORT", 101.0, 4.0)):
        conn.execute(
            "INSERT INTO signals (signal_id, strategy, strategy_version, config_hash, exchange, symbol, eval_time, "
            "direction, tier, score, factors, price, atr, risk_distance, sl_price, tp1_price, tp2_price, sl_r, "
            "tp1_r, tp2_r, is_flip) VALUES (%s, 's', '1', 'h', 'binance', 'BTCUSDT', %s, %s, 'standard', 0.9, %s, "
            "%s, 1, %s, 0, 0, 0, 1, 1, 2, false)",
            (sid, ts(t), direction, Jsonb({}), price, risk),
        )
    conn.execute(
        "INSERT INTO positions (position_id, signal_id, strategy, strategy_version, config_hash, exchange, symbol, "
        "mode, event, direction, tier, entry_price, qty, r_usd, sl_price, tp1_price, tp2_price, fees_r, slippage_r, "
        "event_time) VALUES (%s, %s, 's', '1', 'h', 'binance', 'BTCUSDT', 'paper', 'opened', 'LONG', 'standard', "
        "100, 2, 4, 98, 110, 120, 0, 0, %s)",
        (POS_A, SIG_A, ts(T0 + 1000)),
    )
    fills = [
        ("paper", client_order_id(SIG_A, "entry"), "e1", "BUY", 100.0, 2.0, "0.1", T0 + 1000),
        ("paper", client_order_id(SIG_A, "tp1"), "e2", "SELL", 110.0, 1.0, "0.055", T0 + 5 * H),
        ("live", client_order_id(SIG_A, "entry"), "e3", "BUY", 1.0, 9.0, "9", T0 + 1000),  # another mode
    ]
    for mode, coid, eid, side, price, qty, fee, t in fills:
        conn.execute(
            "INSERT INTO fills (exchange, symbol, mode, client_order_id, exchange_order_id, trade_id, side, price, "
            "qty, fee, fee_asset, liquidity, event_time) VALUES ('binance', 'BTCUSDT', %s, %s, %s, %s, %s, %s, %s, "
            "%s, 'USDT', 'TAKER', %s)",
            (mode, coid, eid, eid, side, price, qty, Decimal(fee), ts(t)),
        )
    trades = [
        (T0, 100.0),
        (T0 + 11 * H, 104.0),
        (T0 + 12 * H + 1, 200.0),
        (T0 + 13 * H, 104.5),
        (T0 + 14 * H + 5, 105.0),
    ]
    for agg, (t, price) in enumerate(trades, start=1):
        conn.execute(
            "INSERT INTO trades (exchange, symbol, agg_id, price, qty, first_trade_id, last_trade_id, event_time, "
            "trade_time, receive_time, taker_side) VALUES ('binance', 'BTCUSDT', %s, %s, 1, %s, %s, %s, %s, %s, 'BUY')",
            (agg, price, agg, agg, ts(t), ts(t), ts(t)),
        )
    marks = [  # (event time, next funding time, rate, mark)
        (T0 + 8 * H - 2000, T0 + 8 * H, 0.0001, 105.0),
        (T0 + 8 * H - 1000, T0 + 8 * H, 0.0002, 106.0),  # the newest before 8 h: settles it
        (T0 + 16 * H - 1000, T0 + 16 * H, 0.0003, 107.0),  # after every 12 h window here
    ]
    for t, f, rate, mark in marks:
        conn.execute(
            "INSERT INTO mark_prices (exchange, symbol, mark_price, index_price, funding_rate, next_funding_time, "
            "event_time, receive_time) VALUES ('binance', 'BTCUSDT', %s, %s, %s, %s, %s, %s)",
            (mark, mark, rate, ts(f), ts(t), ts(t)),
        )


def expected() -> dict[tuple[str, str], dict]:
    funding_a = 1 * 106.0 * 0.0002  # one open at the 8 h settlement, newest mark before it
    qty_b = 10_000 * 0.02 / 4.0  # 50
    fee_b = 0.0005 * 101.0 * qty_b
    funding_b = -1 * qty_b * 106.0 * 0.0002  # a short receives a positive rate
    net_sig_a = 10.0 + (104.0 - 100.0) * 1 - 0.155 - funding_a
    net_trade_a = 10.0 + (200.0 - 100.0) * 1 - 0.155 - funding_a  # t0 = entry: 12 h ends 1 s after the 200 print
    net_b = -(104.5 - 101.0) * qty_b - fee_b - funding_b
    return {
        ("signal", SIG_A): dict(taken=True, price=104.0, net=net_sig_a, basis=200.0, label="pos", fees=0.155),
        ("trade", POS_A): dict(taken=True, price=200.0, net=net_trade_a, basis=200.0, label="pos", fees=0.155),
        ("signal", SIG_B): dict(taken=False, price=104.5, net=net_b, basis=101.0 * qty_b, label="neg", fees=fee_b),
    }


def rows(conninfo: str) -> list[dict]:
    with psycopg.connect(conninfo) as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        cur.execute("SELECT * FROM outcome_labels ORDER BY sample_kind, sample_id, horizon_h")
        return cur.fetchall()


def test_job_writes_the_hand_computed_rows_once_and_a_recompute_replaces_them(migrated_database):
    with psycopg.connect(migrated_database, autocommit=True) as conn:
        plant(conn)
    params, config = LabelParams(), ExecutorConfig()
    stopped = run_due(migrated_database, ["paper"], params=params, config=config, now_ms=NOW, stop=lambda: True)
    assert stopped["paper"].stopped and stopped["paper"].written == 0
    with psycopg.connect(migrated_database) as conn:  # a stopped pass leaves the watermark alone
        assert conn.execute("SELECT count(*) FROM outcome_label_progress").fetchone()[0] == 0
    first = run_due(migrated_database, ["paper"], params=params, config=config, now_ms=NOW)
    assert first["paper"].written == 3
    got = rows(migrated_database)
    want = expected()
    assert {(r["sample_kind"], r["sample_id"]) for r in got} == set(want)
    for r in got:
        w = want[(r["sample_kind"], r["sample_id"])]
        assert r["source"] == "paper" and r["horizon_h"] == 12  # 24 h and 36 h are not due at 15 h
        assert r["taken"] is w["taken"]
        assert r["price_at_horizon"] == w["price"]
        assert float(r["fees"]) == pytest.approx(w["fees"])
        assert float(r["net_pnl"]) == pytest.approx(w["net"])
        assert float(r["basis"]) == pytest.approx(w["basis"])
        assert r["net_roi"] == pytest.approx(w["net"] / w["basis"])
        assert r["label"] == w["label"]
        assert r["horizon_time"] - r["t0"] == timedelta(hours=12)
    assert [r["sample_id"] for r in labels_of(migrated_database, POS_A)] == [SIG_A, POS_A]

    again = run_due(migrated_database, ["paper"], params=params, config=config, now_ms=NOW)
    assert again["paper"].written == 0
    assert rows(migrated_database) == got

    later = NOW + H
    redo = label_range(migrated_database, ["paper"], T0, T0 + 3 * H, params=params, config=config, now_ms=later)
    assert redo.written == 3
    replaced = rows(migrated_database)
    assert len(replaced) == 3
    for old, new in zip(got, replaced, strict=True):
        assert {k: v for k, v in new.items() if k != "computed_at"} == {
            k: v for k, v in old.items() if k != "computed_at"
        }
        assert new["computed_at"] == ts(later)


def test_the_writer_role_runs_the_job_and_the_readonly_role_reads_the_labels(migrated_database):
    with psycopg.connect(migrated_database, autocommit=True) as conn:
        plant(conn)
    as_writer = psycopg.conninfo.make_conninfo(migrated_database, options="-c role=tapeflow_writer")
    as_reader = psycopg.conninfo.make_conninfo(migrated_database, options="-c role=tapeflow_readonly")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        run_due(as_reader, ["paper"], params=LabelParams(), config=ExecutorConfig(), now_ms=NOW)
    done = run_due(as_writer, ["paper"], params=LabelParams(), config=ExecutorConfig(), now_ms=NOW)
    assert done["paper"].written == 3
    assert {r["sample_id"] for r in labels_of(as_reader, SIG_B)} == {SIG_B}
