"""sinks/tables.py: every topic's record -> row mapping, through binary COPY into the real tables.

Each sample record is realistic (shaped after the recorded Binance frames and the engine's outputs)
and is first encoded and decoded with its .avsc, so the converter sees exactly what the sink's Avro
decoder produces. Expected database values are derived independently of the converters
(datetime.fromtimestamp for times, Decimal of the literal for money).
"""

from __future__ import annotations

import io
from datetime import UTC, datetime
from decimal import Decimal

import psycopg
import pytest
from fastavro import schemaless_reader, schemaless_writer

from schemas.avsc import load_avsc
from schemas.catalogue import PROGRESS_TOPIC, all_topics
from schemas.catalogue import topic as topic_spec
from schemas.serde import compile_schema
from sinks.tables import (
    PIPELINE_ERRORS,
    TABLES,
    TOPIC_TABLES,
    dead_letter_digest,
    ms_to_datetime,
    sinkable_topics,
    table_for_topic,
    write_rows,
)
from tests.support.cross_venue import XV_FEATURE
from tests.support.watchlist_trading import XV_COMMAND, XV_FUNDING_PAYMENT, XV_LEG_ORDER, XV_PAIR_EVENT, XV_SIGNAL

T = 1706745599999  # 2024-01-31T23:59:59.999Z


def utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


SAMPLES: dict[str, dict] = {
    "md.trades": {
        "exchange": "binance",
        "symbol": "BTCUSDT",
        "agg_id": 2073569134,
        "price": 42582.1,
        "qty": 0.153,
        "first_trade_id": 4521188120,
        "last_trade_id": 4521188122,
        "event_time": T + 3,
        "trade_time": T,
        "receive_time": T + 41,
        "taker_side": "SELL",
    },
    "md.depth": {
        "exchange": "binance",
        "symbol": "ETHUSDT",
        "first_update_id": 3740000001,
        "final_update_id": 3740000019,
        "prev_final_update_id": 3740000000,
        "event_time": T,
        "transaction_time": T - 2,
        "receive_time": T + 30,
        "bids": [{"price": 2281.35, "qty": 12.5}, {"price": 2281.1, "qty": 0.0}],
        "asks": [{"price": 2281.36, "qty": 3.217}],
    },
    "md.book": {
        "exchange": "binance",
        "symbol": "ETHUSDT",
        "last_update_id": 3740000019,
        "event_time": T,
        "receive_time": T + 30,
        "bids": [{"price": 2281.35, "qty": 12.5}, {"price": 2281.3, "qty": 4.0}],
        "asks": [{"price": 2281.36, "qty": 3.217}, {"price": 2281.4, "qty": 9.9}],
        "obi_10": 0.3617,
    },
    "md.liquidations": {
        "exchange": "binance",
        "symbol": "SOLUSDT",
        "side": "BUY",
        "liquidated_side": "SHORT",
        "price": 101.25,
        "avg_price": 100.98,
        "qty": 120.0,
        "filled_qty": 120.0,
        "usd_value": 12117.6,
        "event_time": T + 1,
        "trade_time": T,
        "receive_time": T + 20,
    },
    "md.mark": {
        "exchange": "binance",
        "symbol": "XRPUSDT",
        "mark_price": 0.5012,
        "index_price": 0.50101,
        "funding_rate": 0.0001,
        "next_funding_time": 1706774400000,
        "event_time": T,
        "receive_time": T + 9,
    },
    "md.indicators": {
        "exchange": "binance",
        "symbol": "BTCUSDT",
        "kind": "long_short_account_ratio",
        "value": 1.82,
        "period": "5m",
        "extra": {"long_account": 0.6454, "short_account": 0.3546},
        "event_time": T,
        "receive_time": T + 300,
    },
    "md.gaps": {
        "exchange": "binance",
        "symbol": "BTCUSDT",
        "stream": "md.trades",
        "from_id": 2073569100,
        "to_id": 2073569120,
        "detected_time": T,
        "reason": "rest_backfill_exhausted",
    },
    "bars.1m": {
        "exchange": "binance",
        "symbol": "BTCUSDT",
        "open_time": T - 59999,
        "close_time": T + 1,
        "open": 42570.0,
        "high": 42590.5,
        "low": 42561.2,
        "close": 42582.1,
        "volume": 38.412,
        "buy_volume": 20.1,
        "sell_volume": 18.312,
        "quote_volume": 1635120.77,
        "vwap": 42568.0,
        "trade_count": 811,
        "first_agg_id": 2073568324,
        "last_agg_id": 2073569134,
    },
    "features": {
        "evaluation_id": f"v53:ab12cd:binance:BTCUSDT:{T}",
        "strategy": "v53",
        "strategy_version": "5.3.0",
        "config_hash": "ab12cd",
        "exchange": "binance",
        "symbol": "BTCUSDT",
        "eval_time": T,
        "inputs": {"cvd_fast": 152.3, "cvd_mid": 801.25, "atr": 61.5, "obi_10": -0.12},
        "layer_scores": {"direction": 55.0, "crowding": 10.0},
        "score": 65.0,
        "direction": "LONG",
        "gate": None,
        "block_reason": "below_entry",
        "config_rev": 2,
        "p_win": 0.6375,
    },
    "signals": {
        "signal_id": f"v53:ab12cd:binance:BTCUSDT:{T}:LONG",
        "strategy": "v53",
        "strategy_version": "5.3.0",
        "config_hash": "ab12cd",
        "exchange": "binance",
        "symbol": "BTCUSDT",
        "eval_time": T,
        "direction": "LONG",
        "tier": "heavy",
        "score": 87.5,
        "factors": {"direction": 55.0, "crowding": 17.5, "environment": 15.0},
        "price": 42582.1,
        "atr": 61.5,
        "risk_distance": 92.25,
        "sl_price": 42489.85,
        "tp1_price": 42651.29,
        "tp2_price": 42720.48,
        "sl_r": 1.0,
        "tp1_r": 0.75,
        "tp2_r": 1.5,
        "is_flip": False,
        "timeout_ms": 14_400_000,
        "config_rev": 2,
        "p_win": 0.9125,
        "size_mult": 1.8,
    },
    "orders": {
        "client_order_id": "tf-9f8e7d-entry",
        "signal_id": f"v53:ab12cd:binance:BTCUSDT:{T}:LONG",
        "position_id": "pos-9f8e7d",
        "exchange_order_id": None,
        "exchange": "binance",
        "symbol": "BTCUSDT",
        "mode": "paper",
        "leg": "entry",
        "side": "BUY",
        "type": "MARKET",
        "price": None,
        "stop_price": None,
        "qty": 0.542,
        "filled_qty": 0.271,
        "avg_fill_price": 42582.1,
        "avg_market_price": 42580.6,
        "reduce_only": False,
        "state": "PARTIALLY_FILLED",
        "reason": None,
        "event_time": T + 12,
        "mid_at_send": 42581.95,
        "mid_source": "book",
        "config_rev": 2,
    },
    "fills": {
        "exchange": "binance",
        "symbol": "BTCUSDT",
        "mode": "paper",
        "client_order_id": "tf-9f8e7d-entry",
        "exchange_order_id": "paper-1",
        "trade_id": "2073569134",
        "side": "BUY",
        "price": 42582.1,
        "qty": 0.271,
        "fee": 5.7699,
        "fee_asset": "USDT",
        "liquidity": "taker",
        "reference_price": 42580.0,
        "market_price": 42580.6,  # the trade it took (the fill price adds the modelled slippage)
        "event_time": T + 12,
    },
    "positions": {
        "position_id": "pos-9f8e7d",
        "signal_id": f"v53:ab12cd:binance:BTCUSDT:{T}:LONG",
        "strategy": "v53",
        "strategy_version": "5.3.0",
        "config_hash": "ab12cd",
        "exchange": "binance",
        "symbol": "BTCUSDT",
        "mode": "paper",
        "event": "closed",
        "direction": "LONG",
        "tier": "heavy",
        "entry_price": 42582.1,
        "qty": 0.0,
        "r_usd": 300.0,
        "sl_price": 42582.1,
        "tp1_price": 42651.29,
        "tp2_price": 42720.48,
        "exit_price": 42720.48,
        "exit_reason": "tp",
        "pnl_r_gross": 1.125,
        "pnl_r_net": 1.0827,
        "fees_r": 0.0423,
        "slippage_r": 0.0,
        "funding_r": 0.0,
        "event_time": T + 3_600_000,
        "timeout_ms": 14_400_000,
        "config_rev": 2,
    },
    "risk.events": {
        "scope": "strategy:v53",
        "mode": "paper",
        "decision": "pause",
        "state": "paused",
        "reason": "consecutive_losses",
        "daily_pnl_r": -3.1,
        "consecutive_losses": 5,
        "paused_until": T + 3_600_000,
        "event_time": T,
    },
    "dlq.md": {
        "source_topic": "md.trades",
        "partition": 3,
        "offset": 889121,
        "key": b"binance:BTCUSDT",
        "value": b"\x00\x00\x00\x00\x01\xff\xfe",
        "error": "WireFormatError: truncated Avro body",
        "stage": "sink.postgres:decode",
        "event_time": T,
    },
    "xv.features": XV_FEATURE,
    "xv.signals": XV_SIGNAL,
    "xv.orders": XV_LEG_ORDER,
    "xv.funding": XV_FUNDING_PAYMENT,
    "xv.pairs": XV_PAIR_EVENT,
    "xv.commands": XV_COMMAND,
}

# columns whose table type is numeric (money): expected value is the Decimal of the literal
NUMERIC = {
    ("fills", "fee"),
    ("positions", "r_usd"),
    ("positions", "pnl_r_gross"),
    ("positions", "pnl_r_net"),
    ("positions", "fees_r"),
    ("positions", "slippage_r"),
    ("positions", "funding_r"),
    ("risk_events", "daily_pnl_r"),
    ("xv_leg_orders", "fee"),
    ("xv_leg_orders", "slippage_usd"),
    ("xv_funding_payments", "paid"),
} | {
    ("xv_pair_events", f"{part}{cost}_usd")
    for part in ("", "short_", "long_")
    for cost in ("gross", "fees", "slippage", "funding", "net")
}
# column -> the record field it holds, where the names differ
RENAMED = {
    "source_partition": "partition",
    "source_offset": "offset",
    "raw_key": "key",
    "raw_value": "value",
    "order_time": "time_ms",
    "book_time": "book_time_ms",
    "funding_time": "funding_time_ms",
    "opened_time": "opened_ms",
    "closed_time": "closed_ms",
    "sent_time": "sent_ms",
}


def decoded(topic: str) -> dict:
    """The sample as the sink's decoder yields it: encoded and read back with the topic's schema."""
    schema = compile_schema(load_avsc(topic_spec(topic).value_schema))
    buf = io.BytesIO()
    schemaless_writer(buf, schema, SAMPLES[topic], strict=True)
    buf.seek(0)
    return schemaless_reader(buf, schema)


def expected_value(spec, column: str, record: dict):
    """What the database should hold for `column`, computed without the converter."""
    if column.endswith(("_prices", "_qtys")):
        side = "bids" if column.startswith("bid") else "asks"
        return [lv["price" if column.endswith("_prices") else "qty"] for lv in record[side]]
    if column == "content_sha256":
        return dead_letter_digest(record)
    value = record[RENAMED.get(column, column)]
    if value is None:
        return None
    if (spec.table, column) in NUMERIC:
        return Decimal(repr(value))
    i = spec.columns.index(column)
    if spec.copy_types[i] == "timestamptz":
        return utc(value)
    return value


def test_every_topic_of_the_catalogue_has_a_table():
    """Except control records with nothing to keep: the progress markers of replays and warm starts, and
    the rollout states and switch points (strategy_rollouts_audit keeps every rollout step); and
    outcome.labels, which its writer stores in outcome_labels itself (review.label_service)."""
    control = {PROGRESS_TOPIC, "config.rollouts", "config.applied", "outcome.labels"}
    for t in all_topics():
        if t.name in control:
            with pytest.raises(ValueError, match="no table for topic"):
                table_for_topic(t.name)
            continue
        spec = table_for_topic(t.name)
        assert spec.table == ("pipeline_errors" if t.is_dlq else TOPIC_TABLES[t.name].table)
    with pytest.raises(ValueError, match="no table for topic"):
        table_for_topic("md.nope")
    assert sinkable_topics() == {t.name for t in all_topics()} - control
    assert set(SAMPLES) == set(TOPIC_TABLES) | {"dlq.md"}


@pytest.mark.parametrize("topic", sorted(SAMPLES))
def test_samples_carry_every_schema_field(topic):
    fields = [f["name"] for f in load_avsc(topic_spec(topic).value_schema)["fields"]]
    assert sorted(SAMPLES[topic]) == sorted(fields)


@pytest.mark.parametrize("topic", sorted(SAMPLES))
def test_the_time_field_the_sink_reads_is_the_rows_time(topic):
    """The sink makes partitions and records the days written from `spec.time_field` of the record:
    the field must exist (xv.orders names it time_ms, stored in order_time) and be the row's time."""
    spec = table_for_topic(topic)
    record = decoded(topic)
    assert ms_to_datetime(record[spec.time_field]) == spec.to_row(record)[spec.columns.index(spec.time_column)]


def test_unix_ms_convert_exactly_at_the_edges():
    assert ms_to_datetime(T) == datetime(2024, 1, 31, 23, 59, 59, 999000, tzinfo=UTC)
    assert ms_to_datetime(0) == datetime(1970, 1, 1, tzinfo=UTC)
    assert ms_to_datetime(-1) == datetime(1969, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)


@pytest.fixture
def db(migrated_database) -> str:
    return migrated_database


def test_spec_columns_are_the_table_columns_in_order(db):
    with psycopg.connect(db) as conn:
        for spec in TABLES.values():
            cols = [
                r[0]
                for r in conn.execute(
                    "SELECT column_name FROM information_schema.columns WHERE table_schema = 'public' "
                    "AND table_name = %s AND is_identity = 'NO' ORDER BY ordinal_position",
                    (spec.table,),
                ).fetchall()
            ]
            assert list(spec.columns) == cols, spec.table


def test_every_topic_round_trips_and_a_second_copy_is_skipped(db):
    with psycopg.connect(db) as conn:
        for topic in sorted(SAMPLES):
            spec = table_for_topic(topic)
            record = decoded(topic)
            row = spec.to_row(record)
            assert len(row) == len(spec.columns)
            assert write_rows(conn, spec, [row, spec.to_row(record)]) == 1, topic  # duplicate in one batch
            assert write_rows(conn, spec, [spec.to_row(decoded(topic))]) == 0, topic  # redelivered later
            conn.commit()
            cols = ", ".join(f'"{c}"' for c in spec.columns)
            stored = conn.execute(f"SELECT {cols} FROM {spec.table}").fetchall()
            assert len(stored) == 1, topic
            for column, got in zip(spec.columns, stored[0]):
                assert got == expected_value(spec, column, record), (topic, column, got)


def test_distinct_transitions_of_one_order_are_kept_replays_are_not(db):
    spec = table_for_topic("orders")
    first = decoded("orders")
    later = dict(first, filled_qty=0.542, state="FILLED", event_time=first["event_time"] + 40)
    replay_with_new_time = dict(first, event_time=first["event_time"] + 99_000)  # re-published after a restart
    with psycopg.connect(db) as conn:
        assert write_rows(conn, spec, [spec.to_row(first), spec.to_row(later)]) == 2
        assert write_rows(conn, spec, [spec.to_row(replay_with_new_time)]) == 0
        live = dict(first, mode="live")  # the same signal traded live is another order
        assert write_rows(conn, spec, [spec.to_row(live)]) == 1


def test_dead_letters_dedupe_by_source_coordinates_or_content(db):
    base = decoded("dlq.md")
    refailed = dict(base, error="WireFormatError: other", event_time=base["event_time"] + 5000)
    unparsed_a = {
        "source_topic": "md.trades",
        "partition": None,
        "offset": None,
        "key": None,
        "value": b"{bad",
        "error": "JSONDecodeError",
        "stage": "producer.binance:parse",
        "event_time": T,
    }
    unparsed_b = dict(unparsed_a, value=b"{worse")
    # another record at the same coordinates: a topic deleted and created again numbers its records
    # from 0 again, so md.trades[0]@5 after that is a different record
    recreated_topic = dict(base, value=base["value"] + b"!", event_time=base["event_time"] + 600_000)
    rows = [PIPELINE_ERRORS.to_row(r) for r in (base, refailed, unparsed_a, unparsed_b, unparsed_a, recreated_topic)]
    with psycopg.connect(db) as conn:
        assert write_rows(conn, PIPELINE_ERRORS, rows) == 4  # base, unparsed_a, unparsed_b, recreated_topic
        conn.commit()
        stored = conn.execute("SELECT id, raw_value FROM pipeline_errors ORDER BY id").fetchall()
    assert len({r[0] for r in stored}) == 4
    assert [bytes(r[1]) for r in stored] == [base["value"], b"{bad", b"{worse", recreated_topic["value"]]


def test_digest_frames_key_and_value_unambiguously():
    a = dict(SAMPLES["dlq.md"], key=b"ab", value=b"c")
    b = dict(SAMPLES["dlq.md"], key=b"a", value=b"bc")
    assert dead_letter_digest(a) != dead_letter_digest(b)
    assert dead_letter_digest(a) == dead_letter_digest(dict(a))


def test_a_failed_batch_leaves_nothing_behind(db):
    spec = table_for_topic("md.trades")
    good = spec.to_row(decoded("md.trades"))
    bad = good[:2] + (None,) + good[3:]  # agg_id NULL violates NOT NULL
    with psycopg.connect(db) as conn:
        with pytest.raises(psycopg.errors.NotNullViolation):
            write_rows(conn, spec, [good, bad])
        conn.rollback()
        assert write_rows(conn, spec, [good]) == 1  # staging was not left holding the failed batch
        conn.commit()
        assert conn.execute("SELECT count(*) FROM trades").fetchone()[0] == 1
