"""The research table: engine feature records + labels, as Parquet and as feature_labels rows."""

from __future__ import annotations

import math

import numpy as np
import psycopg
import pyarrow.parquet as pq
import pytest

from backtest.research.dataset import LABELS, ResearchTable
from backtest.research.labels import PricePath, label_columns
from stream_apps.core.engine import Engine
from stream_apps.core.strategy import parse_strategy
from stream_apps.core.synthetic import synthetic_trades

T = 1_700_006_400_000
FAST = parse_strategy(
    {
        "name": "fast_test",
        "version": "1",
        "windows": {"cvd_fast": "5m", "cvd_mid": "30m"},
        "warmup": "10m",
        "weights": {"direction": 55, "crowding": 0, "environment": 0, "auxiliary": 0},
        "thresholds": {"entry": 40, "heavy": 50, "flip": 50},
        "cooldown": "2m",
        "exits": {"sl_atr_mult": 1.5, "tp1_r": 1.0, "tp2_r": 2.0, "timeout_min": 60},
    }
)


@pytest.fixture(scope="module")
def research():
    trades = synthetic_trades(
        "BTCUSDT", start_ms=T, duration_ms=3 * 3_600_000, rate_per_s=3.0, seed=4, volatility_bps=4.0
    )
    engine = Engine([FAST])
    out = engine.process([trades])
    path = PricePath.from_trades(trades.time_ms, trades.price)
    table = ResearchTable()
    table.add_tables(out.tables, {("binance", "BTCUSDT"): path})
    return out, table, path


def test_one_row_per_feature_record_with_the_engine_numbers(research):
    out, table, _ = research
    columns = table.columns()
    records = out.features  # the same records as dicts
    assert len(table) == len(records) > 1000
    assert columns["evaluation_id"].tolist() == [r["evaluation_id"] for r in records]
    assert columns["score"].tolist() == [r["score"] for r in records]
    assert columns["block_reason"].tolist() == [r["block_reason"] for r in records]
    assert columns["direction"].tolist() == [r["direction"] for r in records]
    assert columns["in_cvd_5m"].tolist() == [r["inputs"]["cvd_5m"] for r in records]
    assert all(math.isnan(v) for v in columns["layer_crowding"])  # weight 0: not a layer of this strategy


def test_labels_are_those_of_the_label_functions(research):
    _, table, path = research
    c = table.columns()
    sign = np.array([{"LONG": 1, "SHORT": -1}.get(d, 0) for d in c["direction"]])
    expected = label_columns(c["eval_time"], c["in_last_price"], c["in_atr"], sign, path)
    for name in LABELS:
        assert np.array_equal(c[name], expected[name], equal_nan=True)
    y = c["y_binary_60m"]
    assert np.nansum(y == 1) > 0 and np.nansum(y == 0) > 0 and np.isnan(y).sum() > 0  # all three outcomes


def test_parquet_round_trip(research, tmp_path):
    _, table, _ = research
    written = table.write_parquet(tmp_path / "labels.parquet")
    back = pq.read_table(written)
    assert back.num_rows == len(table)
    c = table.columns()
    assert back.column("evaluation_id").to_pylist() == c["evaluation_id"].tolist()
    y = back.column("y_binary_60m").to_pylist()
    assert [None if math.isnan(v) else int(v) for v in c["y_binary_60m"]] == y
    assert str(back.schema.field("eval_time").type) == "timestamp[ms, tz=UTC]"


@pytest.mark.integration
def test_feature_labels_table_upserts_beside_features(research, migrated_database):
    _, table, _ = research
    assert table.store(migrated_database) == len(table)
    assert table.store(migrated_database) == len(table)  # again: replaced, not duplicated
    c = table.columns()
    with psycopg.connect(migrated_database) as conn:
        count, ones, nulls = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE y_binary_60m = 1), count(*) FILTER (WHERE y_binary_60m IS NULL) "
            "FROM feature_labels"
        ).fetchone()
        row = conn.execute(
            "SELECT fwd_return_15m, entry_price FROM feature_labels WHERE evaluation_id = %s",
            (c["evaluation_id"][500],),
        ).fetchone()
    assert count == len(table)
    assert ones == int(np.nansum(c["y_binary_60m"] == 1)) and nulls == int(np.isnan(c["y_binary_60m"]).sum())
    expected = c["fwd_return_15m"][500]
    assert (row[0] is None and math.isnan(expected)) or row[0] == pytest.approx(expected, rel=1e-12)
    assert row[1] == c["in_last_price"][500]
