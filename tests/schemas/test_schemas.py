"""Topic catalogue, the .avsc files and AvroSerde: round trips with realistic records, the Confluent
wire format checked against a hand-written Avro encoder, field-naming validation errors, decode
errors, and schema evolution on read."""

from __future__ import annotations

import io
import struct

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer

from schemas.avsc import avsc_stems, canonical_json, load_avsc, strip_logical_types
from schemas.catalogue import (
    DLQ_TOPICS,
    SYMBOL_PARTITIONS,
    TOPICS,
    TopicSpec,
    all_topics,
    dlq_topic,
    symbol_key,
    topic,
    topic_configs,
)
from schemas.errors import (
    IncompatibleSchemaError,
    SchemaValidationError,
    UnknownSchemaIdError,
    UnknownTopicError,
    WireFormatError,
)
from schemas.registry import FileSchemaRegistry
from schemas.serde import AvroSerde, frame_header, peek_schema_id
from tests.review.test_labels import OUTCOME_LABEL
from tests.support.avro import zigzag_varint
from tests.support.cross_venue import XV_FEATURE
from tests.support.rollout import CONFIG_APPLIED, ROLLOUT_CANARY
from tests.support.watchlist_trading import XV_COMMAND, XV_FUNDING_PAYMENT, XV_LEG_ORDER, XV_PAIR_EVENT, XV_SIGNAL

# --- realistic records, one per topic ----------------------------------------------------------
# md.trades: the first aggTrade frame of the recording (receive time 1626992742.289739 s), and a
# BTCUSDT trade in the style of 2024 prices/ids.
CTK_TRADE = {  # {"E":1626992741575,"a":16599292,"s":"CTKUSDT","p":"1.01100","q":"10","f":23961322,"l":23961322,"T":1626992741421,"m":false}
    "exchange": "binance",
    "symbol": "CTKUSDT",
    "agg_id": 16599292,
    "price": 1.011,
    "qty": 10.0,
    "first_trade_id": 23961322,
    "last_trade_id": 23961322,
    "event_time": 1626992741575,
    "trade_time": 1626992741421,
    "receive_time": 1626992742289,
    "taker_side": "BUY",  # m=false: buyer took
}
BTC_TRADE = {
    "exchange": "binance",
    "symbol": "BTCUSDT",
    "agg_id": 2270511834,
    "price": 67012.4,
    "qty": 0.153,
    "first_trade_id": 5102938811,
    "last_trade_id": 5102938814,
    "event_time": 1718000000123,
    "trade_time": 1718000000119,
    "receive_time": 1718000000161,
    "taker_side": "SELL",
}
# md.depth: {"E":1626992741037,"T":1626992741024,"s":"SUSHIUSDT","U":600859599090,"u":600859600917,
#            "pu":600859598061,"b":[["7.5040","813"],["7.6090","0"],["7.6110","2"]],"a":[["7.6150","1563"],["7.6220","3284"]]}
SUSHI_DIFF = {
    "exchange": "binance",
    "symbol": "SUSHIUSDT",
    "first_update_id": 600859599090,
    "final_update_id": 600859600917,
    "prev_final_update_id": 600859598061,
    "event_time": 1626992741037,
    "transaction_time": 1626992741024,
    "receive_time": 1626992741081,
    "bids": [{"price": 7.504, "qty": 813.0}, {"price": 7.609, "qty": 0.0}, {"price": 7.611, "qty": 2.0}],
    "asks": [{"price": 7.615, "qty": 1563.0}, {"price": 7.622, "qty": 3284.0}],
}
# md.book: top 3 levels of the recorded REST snapshot (lastUpdateId 600859605926, E 1626992741264).
# OBI by hand: bids 6+161+285 = 452, asks 297+177+758 = 1232, (452-1232)/(452+1232) = -780/1684.
SUSHI_BOOK = {
    "exchange": "binance",
    "symbol": "SUSHIUSDT",
    "last_update_id": 600859605926,
    "event_time": 1626992741264,
    "receive_time": 1626992741301,
    "bids": [{"price": 7.611, "qty": 6.0}, {"price": 7.608, "qty": 161.0}, {"price": 7.607, "qty": 285.0}],
    "asks": [{"price": 7.612, "qty": 297.0}, {"price": 7.613, "qty": 177.0}, {"price": 7.614, "qty": 758.0}],
    "obi_10": -780 / 1684,
}
# md.liquidations: a SELL forceOrder (a LONG liquidated): usd = 66890.2 * 0.412 = 27558.7624.
BTC_LIQUIDATION = {
    "exchange": "binance",
    "symbol": "BTCUSDT",
    "side": "SELL",
    "liquidated_side": "LONG",
    "price": 66712.5,
    "avg_price": 66890.2,
    "qty": 0.412,
    "filled_qty": 0.412,
    "usd_value": 27558.7624,
    "event_time": 1718000012345,
    "trade_time": 1718000012341,
    "receive_time": 1718000012399,
}
BTC_MARK = {
    "exchange": "binance",
    "symbol": "BTCUSDT",
    "mark_price": 67010.8,
    "index_price": 67041.53243478,
    "funding_rate": 0.0001,
    "next_funding_time": 1718006400000,
    "event_time": 1718000001000,
    "receive_time": 1718000001047,
}
BTC_LS_RATIO = {
    "exchange": "binance",
    "symbol": "BTCUSDT",
    "kind": "long_short_account_ratio",
    "value": 1.8542,
    "period": "5m",
    "extra": {"long_account": 0.6496, "short_account": 0.3504},
    "event_time": 1717999800000,
    "receive_time": 1718000002210,
}
BTC_GAP = {
    "exchange": "binance",
    "symbol": "BTCUSDT",
    "stream": "md.trades",
    "from_id": 2270511835,
    "to_id": 2270511902,
    "detected_time": 1718000030000,
    "reason": "rest_backfill_exhausted",
}
BTC_PROGRESS = {
    "exchange": "binance",
    "symbol": "BTCUSDT",
    "source": "producer-replay",
    "watermark_ms": 1718000028000,
    "offsets": {"md.trades": 41250, "md.book": 9120, "md.mark": 310},
    "final": False,
    "sequence": 27,
}
BTC_BAR = {
    "exchange": "binance",
    "symbol": "BTCUSDT",
    "open_time": 1717999980000,
    "close_time": 1718000040000,
    "open": 67001.1,
    "high": 67019.9,
    "low": 66995.0,
    "close": 67012.4,
    "volume": 48.213,
    "buy_volume": 21.004,
    "sell_volume": 27.209,
    "quote_volume": 3230837.54,
    "vwap": 67011.12,
    "trade_count": 1873,
    "first_agg_id": 2270509962,
    "last_agg_id": 2270511834,
}
EVAL_TIME = 1718000040000
CONFIG_HASH = "9f2c1e4b7a3d5f60"
BTC_FEATURES = {
    "evaluation_id": f"v53:{CONFIG_HASH}:binance:BTCUSDT:{EVAL_TIME}",
    "strategy": "v53",
    "strategy_version": "5.3.0",
    "config_hash": CONFIG_HASH,
    "exchange": "binance",
    "symbol": "BTCUSDT",
    "eval_time": EVAL_TIME,
    "inputs": {"cvd_fast": 412.5, "cvd_mid": 1830.2, "atr": 161.4, "atr_percentile": 63.0, "obi_10": 0.18},
    "layer_scores": {"direction": 55.0, "crowding": 20.0, "environment": 10.0, "auxiliary": 2.0},
    "score": 87.0,
    "direction": "LONG",
    "gate": None,
    "block_reason": None,
    "config_rev": 3,
    "p_win": 0.7125,
}
SIGNAL_ID = f"v53:{CONFIG_HASH}:binance:BTCUSDT:{EVAL_TIME}:LONG"
# risk_distance = 1.5 * 161.4 = 242.1; sl = 67012.4 - 242.1; tp1 = + 1.0R; tp2 = + 2.0R.
BTC_SIGNAL = {
    "signal_id": SIGNAL_ID,
    "strategy": "v53",
    "strategy_version": "5.3.0",
    "config_hash": CONFIG_HASH,
    "exchange": "binance",
    "symbol": "BTCUSDT",
    "eval_time": EVAL_TIME,
    "direction": "LONG",
    "tier": "heavy",
    "score": 87.0,
    "factors": {"direction": 55.0, "crowding": 20.0, "environment": 10.0, "auxiliary": 2.0},
    "price": 67012.4,
    "atr": 161.4,
    "risk_distance": 242.1,
    "sl_price": 66770.3,
    "tp1_price": 67254.5,
    "tp2_price": 67496.6,
    "sl_r": 1.0,
    "tp1_r": 1.0,
    "tp2_r": 2.0,
    "is_flip": False,
    "timeout_ms": 14_400_000,
    "config_rev": 3,
    "p_win": 0.7125,
    "size_mult": 1.5,  # heavy 1.5 x the model's band 1.0 (0.6 < p_win <= 0.85)
}
BTC_ORDER = {
    "client_order_id": "tf-7c1d0a9e-entry",
    "signal_id": SIGNAL_ID,
    "position_id": "pos-7c1d0a9e",
    "exchange_order_id": "4058231907",
    "exchange": "binance",
    "symbol": "BTCUSDT",
    "mode": "testnet",
    "leg": "entry",
    "side": "BUY",
    "type": "LIMIT",
    "price": 67012.4,
    "stop_price": None,
    "qty": 1.239,
    "filled_qty": 1.239,
    "avg_fill_price": 67012.4,
    "avg_market_price": 67012.4,
    "reduce_only": False,
    "state": "FILLED",
    "reason": None,
    "event_time": 1718000040412,
    "mid_at_send": 67011.85,
    "mid_source": "book",
    "config_rev": 3,
}
BTC_FILL = {
    "exchange": "binance",
    "symbol": "BTCUSDT",
    "mode": "testnet",
    "client_order_id": "tf-7c1d0a9e-entry",
    "exchange_order_id": "4058231907",
    "trade_id": "5102940077",
    "side": "BUY",
    "price": 67012.4,
    "qty": 1.239,
    "fee": 16.6056727,
    "fee_asset": "USDT",
    "liquidity": "maker",
    "reference_price": 67012.4,
    "market_price": 67012.4,
    "event_time": 1718000040398,
}
BTC_POSITION_CLOSED = {
    "position_id": "pos-7c1d0a9e",
    "signal_id": SIGNAL_ID,
    "strategy": "v53",
    "strategy_version": "5.3.0",
    "config_hash": CONFIG_HASH,
    "exchange": "binance",
    "symbol": "BTCUSDT",
    "mode": "paper",
    "event": "closed",
    "direction": "LONG",
    "tier": "heavy",
    "entry_price": 67012.4,
    "qty": 0.0,
    "r_usd": 300.0,
    "sl_price": 67012.4,
    "tp1_price": 67254.5,
    "tp2_price": 67496.6,
    "exit_price": 67012.4,
    "exit_reason": "sl_be",
    "pnl_r_gross": 0.5,
    "pnl_r_net": 0.221,
    "fees_r": 0.2768,
    "slippage_r": 0.0022,
    "funding_r": 0.0,
    "event_time": 1718001912007,
    "timeout_ms": 14_400_000,
    "config_rev": 3,
}
RISK_PAUSE = {
    "scope": "global",
    "mode": "paper",
    "decision": "pause",
    "state": "paused",
    "reason": "consecutive_losses",
    "daily_pnl_r": -3.7,
    "consecutive_losses": 5,
    "paused_until": 1718005600000,
    "event_time": 1718002000000,
}
DEAD_FRAME = {
    "source_topic": "md.trades",
    "partition": None,
    "offset": None,
    "key": b"binance:BTCUSDT",
    "value": b'{"e":"aggTrade","E":1718000000123,"a":2270511834,"s":"BTCUSDT","p":"67012.40","q":"abc"}',
    "error": "ValueError: could not convert string to float: 'abc'",
    "stage": "producer.binance:parse",
    "event_time": 1718000000170,
}
DEAD_CONSUMED = {
    "source_topic": "signals",
    "partition": 3,
    "offset": 18211,
    "key": b"binance:BTCUSDT",
    "value": b"\x00\x00\x00\x00\x0a\x02",
    "error": "WireFormatError: truncated",
    "stage": "sink.postgres:decode",
    "event_time": 1718000050000,
}

SAMPLES: dict[str, list[dict]] = {
    "md.trades": [CTK_TRADE, BTC_TRADE],
    "md.depth": [SUSHI_DIFF],
    "md.book": [SUSHI_BOOK],
    "md.liquidations": [BTC_LIQUIDATION],
    "md.mark": [BTC_MARK],
    "md.indicators": [BTC_LS_RATIO],
    "md.gaps": [BTC_GAP],
    "md.progress": [BTC_PROGRESS],
    "bars.1m": [BTC_BAR],
    "features": [BTC_FEATURES],
    "signals": [BTC_SIGNAL],
    "orders": [BTC_ORDER],
    "fills": [BTC_FILL],
    "positions": [BTC_POSITION_CLOSED],
    "risk.events": [RISK_PAUSE],
    "config.rollouts": [ROLLOUT_CANARY],
    "config.applied": [CONFIG_APPLIED],
    "outcome.labels": [OUTCOME_LABEL],
    "xv.features": [XV_FEATURE],
    "xv.signals": [XV_SIGNAL],
    "xv.orders": [XV_LEG_ORDER],
    "xv.funding": [XV_FUNDING_PAYMENT],
    "xv.pairs": [XV_PAIR_EVENT],
    "xv.commands": [XV_COMMAND],
}
for _dlq in DLQ_TOPICS:
    SAMPLES[_dlq] = [DEAD_FRAME, DEAD_CONSUMED]


@pytest.fixture(scope="module")
def registry() -> FileSchemaRegistry:
    return FileSchemaRegistry()


@pytest.fixture(scope="module")
def serde(registry) -> AvroSerde:
    return AvroSerde(registry)


@pytest.fixture(scope="module")
def strict_serde(registry) -> AvroSerde:
    return AvroSerde(registry, strict=True)


# --- catalogue ---------------------------------------------------------------------------------
def test_samples_cover_every_topic():
    assert set(SAMPLES) == {t.name for t in all_topics()}


def test_every_topic_has_a_parseable_schema_and_every_avsc_is_used():
    used = set()
    for spec in all_topics():
        schema = load_avsc(spec.value_schema)
        parse_schema(schema)
        assert schema["type"] == "record" and schema["namespace"] == "tapeflow"
        used.add(spec.value_schema)
    assert used == set(avsc_stems())


def test_every_field_and_record_is_documented():
    for stem in avsc_stems():
        schema = load_avsc(stem)
        assert schema.get("doc"), stem
        for field in schema["fields"]:
            assert field.get("doc"), f"{stem}.{field['name']}"


def test_topic_lookup_and_unknown_topic_error_lists_valid_names():
    assert topic("md.trades").value_schema == "trade"
    assert topic("dlq.md").value_schema == "dead_letter"
    with pytest.raises(UnknownTopicError) as info:
        topic("md.trade")
    assert isinstance(info.value, KeyError)
    message = str(info.value)
    assert message.startswith("unknown topic 'md.trade'; valid topics: ")
    assert all(t.name in message for t in all_topics())


def test_dlq_topic_routing():
    assert dlq_topic("md.trades") == "dlq.md"
    assert dlq_topic("md.gaps") == "dlq.md"
    assert dlq_topic("signals") == "dlq.signals"
    assert dlq_topic("risk.events") == "dlq.risk.events"
    for name in TOPICS:
        assert topic(dlq_topic(name)).is_dlq
    with pytest.raises(ValueError):
        dlq_topic("dlq.md")
    with pytest.raises(UnknownTopicError):
        dlq_topic("nope")


def test_all_topics_primary_then_dlq_with_unique_names():
    names = [t.name for t in all_topics()]
    assert len(names) == len(set(names))
    assert names[: len(TOPICS)] == list(TOPICS)
    assert (
        set(names[len(TOPICS) :])
        == set(DLQ_TOPICS)
        == {"dlq.md"} | {"dlq." + n for n in TOPICS if not n.startswith("md.")}
    )


def test_topic_configs_are_kafka_strings():
    day = 86_400_000
    arrival = {"message.timestamp.type": "LogAppendTime"}
    assert topic_configs(topic("md.trades")) == {
        "cleanup.policy": "delete",
        "retention.ms": str(7 * day),
        "segment.ms": str(day),
        **arrival,
    }
    assert topic_configs(topic("risk.events")) == {"cleanup.policy": "compact", **arrival}


def test_retention_market_data_settable_derived_30_days_trading_records_kept():
    day = 86_400_000
    assert topic_configs(topic("md.trades"), md_retention_ms=3_600_000)["retention.ms"] == "3600000"
    assert topic_configs(topic("md.trades"), md_retention_ms=3_600_000)["segment.ms"] == "3600000"
    assert topic_configs(topic("md.trades"), md_retention_ms=0)["retention.ms"] == "-1"
    # gap reports outlive the market data they describe (they were cut to its 7 days), never the reverse
    assert topic_configs(topic("md.gaps"), md_retention_ms=7 * day)["retention.ms"] == str(30 * day)
    assert topic_configs(topic("md.gaps"), md_retention_ms=90 * day)["retention.ms"] == str(90 * day)
    assert topic_configs(topic("md.gaps"), md_retention_ms=0)["retention.ms"] == "-1"
    for derived in ("bars.1m", "features", "signals"):
        assert topic_configs(topic(derived), md_retention_ms=3_600_000)["retention.ms"] == str(30 * day)
    for kept in ("orders", "fills", "positions"):
        assert topic_configs(topic(kept))["retention.ms"] == "-1"


def test_topics_the_engine_and_executor_join_are_co_partitioned():
    joined = [
        "md.trades",
        "md.book",
        "md.liquidations",
        "md.mark",
        "md.indicators",
        "bars.1m",
        "features",
        "signals",
        "orders",
        "fills",
        "positions",
    ]
    assert {(topic(n).key, topic(n).partitions) for n in joined} == {("exchange:symbol", SYMBOL_PARTITIONS)}


def test_topic_spec_rejects_inconsistent_cleanup():
    with pytest.raises(ValueError):
        TopicSpec("x", "k", 1, "compact", 1000, "trade", "")
    with pytest.raises(ValueError):
        TopicSpec("x", "k", 1, "delete", 0, "trade", "")
    with pytest.raises(ValueError):
        TopicSpec("x", "k", 0, "delete", 1000, "trade", "")
    assert TopicSpec("x", "k", 1, "delete", None, "trade", "").retention_ms is None  # kept


def test_symbol_key():
    assert symbol_key("binance", "BTCUSDT") == b"binance:BTCUSDT"


# --- coherence across schemas --------------------------------------------------------------------
def _named_types(schema, found):
    if isinstance(schema, list):
        for s in schema:
            _named_types(s, found)
    elif isinstance(schema, dict):
        if schema.get("type") in ("record", "enum", "fixed"):
            found.setdefault(schema["name"], []).append(schema)
            for f in schema.get("fields", []):
                _named_types(f["type"], found)
        for key in ("items", "values"):
            if key in schema:
                _named_types(schema[key], found)


def _non_null(field_type):
    if isinstance(field_type, list):
        rest = [t for t in field_type if t != "null"]
        return rest[0] if len(rest) == 1 else rest
    return field_type


def test_shared_named_types_are_identical_everywhere():
    found: dict[str, list] = {}
    for stem in avsc_stems():
        for field in load_avsc(stem)["fields"]:
            _named_types(field["type"], found)
    for name, definitions in found.items():
        assert len({canonical_json(d) for d in definitions}) == 1, name
    assert len(found["Side"]) >= 4 and len(found["Direction"]) >= 4  # actually shared, not renamed


# Same name, different concept, on purpose: a dead letter's Kafka `value` (bytes) vs an indicator's
# `value`; `state` is the lifecycle state of its own entity (order vs risk guard); `leg` is an order's
# role in a position (OrderLeg: entry, tp1, ...) vs the side of a hedged pair (short, long: xv.orders,
# xv.funding).
SAME_NAME_DIFFERENT_CONCEPT = {"value", "state", "leg"}


def test_same_field_name_means_same_type_up_to_nullability():
    types: dict[str, set[str]] = {}
    for stem in avsc_stems():
        for field in load_avsc(stem)["fields"]:
            t = _non_null(field["type"])
            if isinstance(t, dict) and t.get("type") in ("enum", "record"):
                t = t["name"]  # definitions are compared by the test above
            types.setdefault(field["name"], set()).add(canonical_json(t))
    conflicts = {name: ts for name, ts in types.items() if len(ts) > 1 and name not in SAME_NAME_DIFFERENT_CONCEPT}
    assert conflicts == {}
    assert types["event_time"] == {canonical_json({"type": "long", "logicalType": "timestamp-millis"})}


def test_time_fields_are_timestamp_millis():
    for stem in avsc_stems():
        for field in load_avsc(stem)["fields"]:
            if field["name"].endswith("_time") or field["name"] == "paused_until":
                assert _non_null(field["type"]) == {"type": "long", "logicalType": "timestamp-millis"}, field


# --- serde round trips -------------------------------------------------------------------------
@pytest.mark.parametrize("name", [t.name for t in all_topics()])
def test_round_trip_every_topic(serde, strict_serde, name):
    for record in SAMPLES[name]:
        data = serde.encode(name, record)
        assert serde.decode(data) == record
        assert strict_serde.encode(name, record) == data
        assert serde.decode(data, topic=name) == record


def test_timestamps_stay_ints(serde):
    decoded = serde.decode(serde.encode("md.trades", BTC_TRADE))
    assert type(decoded["trade_time"]) is int and decoded["trade_time"] == 1718000000119


def test_optional_fields_get_their_defaults(serde):
    order = {
        k: v
        for k, v in BTC_ORDER.items()
        if k
        not in (
            "signal_id",
            "position_id",
            "exchange_order_id",
            "price",
            "stop_price",
            "filled_qty",
            "avg_fill_price",
            "avg_market_price",
            "reduce_only",
            "reason",
            "mid_at_send",
            "mid_source",
            "config_rev",
        )
    }
    decoded = serde.decode(serde.encode("orders", order))
    assert decoded == {
        **order,
        "signal_id": None,
        "position_id": None,
        "exchange_order_id": None,
        "price": None,
        "stop_price": None,
        "filled_qty": 0.0,
        "avg_fill_price": None,
        "avg_market_price": None,
        "reduce_only": False,
        "reason": None,
        "mid_at_send": None,
        "mid_source": None,
        "config_rev": None,
    }


# --- wire format -------------------------------------------------------------------------------
def _avro_string(s: str) -> bytes:
    raw = s.encode()
    return zigzag_varint(len(raw)) + raw


def test_wire_format_matches_hand_encoding(serde, registry):
    schema_id = registry.id_for("md.gaps-value", load_avsc("data_gap"))
    expected = (
        b"\x00"
        + struct.pack(">I", schema_id)
        + _avro_string("binance")
        + _avro_string("BTCUSDT")
        + _avro_string("md.trades")
        + zigzag_varint(2270511835)
        + zigzag_varint(2270511902)
        + zigzag_varint(1718000030000)
        + _avro_string("rest_backfill_exhausted")
    )
    assert zigzag_varint(1) == b"\x02" and zigzag_varint(-1) == b"\x01" and zigzag_varint(64) == b"\x80\x01"
    assert serde.encode("md.gaps", BTC_GAP) == expected


def test_header_is_magic_zero_and_registered_id_and_body_is_plain_avro(serde, registry):
    data = serde.encode("md.trades", BTC_TRADE)
    assert data[0] == 0
    schema_id = int.from_bytes(data[1:5], "big")
    assert schema_id == registry.id_for("md.trades-value", load_avsc("trade")) == serde.schema_id("md.trades")
    assert peek_schema_id(data) == schema_id
    body = schemaless_reader(io.BytesIO(data[5:]), parse_schema(strip_logical_types(load_avsc("trade"))))
    assert body == BTC_TRADE


def test_every_dlq_topic_shares_one_schema_id(serde):
    ids = {serde.schema_id(name) for name in DLQ_TOPICS}
    assert len(ids) == 1
    assert ids.isdisjoint({serde.schema_id(name) for name in TOPICS})


# --- validation errors -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "topic_name, change, field, message",
    [
        ("md.trades", {"price": "abc"}, "price", "md.trades: field 'price' expected double, got str 'abc'"),
        (
            "md.trades",
            {"taker_side": "HOLD"},
            "taker_side",
            "md.trades: field 'taker_side' expected enum Side ['BUY', 'SELL'], got str 'HOLD'",
        ),
        (
            "md.trades",
            {"symbol": None},
            "symbol",
            "md.trades: field 'symbol' expected string, got nothing (missing or None)",
        ),
        (
            "orders",
            {"price": "67012.4"},
            "price",
            "orders: field 'price' expected one of null, double, got str '67012.4'",
        ),
        (
            "md.depth",
            {"bids": [{"price": "n/a", "qty": 813.0}]},
            "PriceLevel.price",
            "md.depth: field 'PriceLevel.price' expected double, got str 'n/a'",
        ),
        ("signals", {"factors": {"direction": "55"}}, "factors", None),
    ],
)
@pytest.mark.parametrize("strict", [False, True])
def test_invalid_records_name_topic_and_field(registry, topic_name, change, field, message, strict):
    serde = AvroSerde(registry, strict=strict)
    record = {**SAMPLES[topic_name][0], **change}
    with pytest.raises(SchemaValidationError) as info:
        serde.encode(topic_name, record)
    assert info.value.topic == topic_name and info.value.field == field
    assert str(info.value) == message if message else f"field '{field}'" in str(info.value)


def test_missing_required_field_is_named(serde):
    record = dict(BTC_TRADE)
    del record["qty"]
    with pytest.raises(SchemaValidationError, match=r"^md\.trades: field 'qty' expected double, got nothing"):
        serde.encode("md.trades", record)


@pytest.mark.parametrize(
    "change, field",
    [
        ({"agg_id": 2270511834.5}, "agg_id"),  # the fast writer would truncate this
        ({"price": True}, "price"),  # ... and write this as 1.0
        ({"prcie": 1.0}, "prcie"),  # ... and drop this typo
        ({"price": "67012.40"}, "price"),  # ... and parse this Binance-style string
    ],
)
def test_strict_mode_rejects_silent_coercions(strict_serde, change, field):
    with pytest.raises(SchemaValidationError) as info:
        strict_serde.encode("md.trades", {**BTC_TRADE, **change})
    assert info.value.field == field


def test_non_record_value_is_rejected(serde):
    with pytest.raises(SchemaValidationError, match=r"^md\.trades: record expected record Trade, got list \[1, 2\]$"):
        serde.encode("md.trades", [1, 2])


def test_unknown_topic_on_encode(serde):
    with pytest.raises(UnknownTopicError):
        serde.encode("md.trade", BTC_TRADE)


# --- decode errors -----------------------------------------------------------------------------
def test_bad_magic_byte(serde):
    data = serde.encode("md.trades", BTC_TRADE)
    with pytest.raises(WireFormatError, match="magic byte 1 "):
        serde.decode(b"\x01" + data[1:])
    with pytest.raises(WireFormatError, match="magic byte 123 "):
        serde.decode(b'{"e":"aggTrade"}')


def test_too_short_for_header(serde):
    with pytest.raises(WireFormatError, match="3 bytes: too short"):
        serde.decode(b"\x00\x00\x00")


def test_unknown_schema_id(serde):
    data = serde.encode("md.trades", BTC_TRADE)
    with pytest.raises(UnknownSchemaIdError, match="schema id 999999 is not in"):
        serde.decode(frame_header(999999) + data[5:])


def test_truncated_and_padded_bodies(serde):
    data = serde.encode("md.depth", SUSHI_DIFF)
    for cut in (6, len(data) // 2, len(data) - 1):
        with pytest.raises(WireFormatError, match="truncated or corrupt"):
            serde.decode(data[:cut])
    with pytest.raises(WireFormatError, match="2 trailing bytes"):
        serde.decode(data + b"\x00\x00")


# --- schema evolution on read ------------------------------------------------------------------
def _trade_with_extra_field() -> dict:
    old = load_avsc("trade")
    old["fields"].insert(7, {"name": "is_best_match", "type": "boolean", "doc": "removed since"})
    return old


def test_decode_with_topic_resolves_older_writer_schema(tmp_path):
    registry = FileSchemaRegistry(tmp_path / "registry.json")
    old = _trade_with_extra_field()
    old_id = registry.register("md.trades-value", old)
    new_id = registry.register("md.trades-value", load_avsc("trade"))  # dropping a field is compatible
    assert new_id != old_id
    buf = io.BytesIO()
    schemaless_writer(buf, parse_schema(strip_logical_types(old)), {**BTC_TRADE, "is_best_match": True})
    data = frame_header(old_id) + buf.getvalue()
    serde = AvroSerde(registry)
    assert serde.decode(data) == {**BTC_TRADE, "is_best_match": True}  # as written
    assert serde.decode(data, topic="md.trades") == BTC_TRADE  # as the current schema sees it


def test_decode_with_explicit_reader_schema_fills_defaults(serde):
    reader = load_avsc("trade")
    reader["fields"] = [f for f in reader["fields"] if f["name"] != "first_trade_id"]
    reader["fields"].append({"name": "source", "type": "string", "default": "ws", "doc": "added later"})
    decoded = serde.decode(serde.encode("md.trades", BTC_TRADE), reader_schema=reader)
    expected = {k: v for k, v in BTC_TRADE.items() if k != "first_trade_id"} | {"source": "ws"}
    assert decoded == expected


def test_decode_with_incompatible_reader_schema(serde):
    reader = load_avsc("trade")
    reader["fields"].append({"name": "source", "type": "string", "doc": "no default"})
    with pytest.raises(IncompatibleSchemaError):
        serde.decode(serde.encode("md.trades", BTC_TRADE), reader_schema=reader)


@pytest.mark.parametrize("topic, sample", [("signals", BTC_SIGNAL), ("positions", BTC_POSITION_CLOSED)])
def test_records_written_before_timeout_ms_read_it_as_null(topic, sample):
    """Signals and position events still in the topics from before they carried the strategy's timeout:
    the current schema reads them with timeout_ms null (the executor then applies its own setting)."""
    registry = FileSchemaRegistry()
    previous = [
        v for v in registry.versions(f"{topic}-value") if "timeout_ms" not in {f["name"] for f in v["schema"]["fields"]}
    ][-1]
    newer = ("timeout_ms", "config_rev", "p_win", "size_mult")
    old = {k: v for k, v in sample.items() if k not in newer}
    buf = io.BytesIO()
    schemaless_writer(buf, parse_schema(strip_logical_types(previous["schema"])), old)
    data = frame_header(previous["id"]) + buf.getvalue()
    defaults = {
        "timeout_ms": None,
        "config_rev": 0,
        **({"p_win": None, "size_mult": None} if topic == "signals" else {}),
    }
    assert AvroSerde(registry).decode(data, topic=topic) == {**old, **defaults}
