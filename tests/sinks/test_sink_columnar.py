"""The sink's fast path (a fetch decoded into columns, binary COPY) stores exactly what the
record-by-record path stores, refuses anything it cannot prove it decoded right, and stays
idempotent on natural keys."""

from __future__ import annotations

import random

import psycopg
import pytest

from schemas.avsc import strip_logical_types
from schemas.catalogue import topic as topic_spec
from schemas.registry import FileSchemaRegistry
from schemas.serde import AvroSerde
from sinks.columnar import COLUMNAR, ColumnarCodec, ColumnarError, copy_payload
from sinks.tables import TABLES, TOPIC_TABLES, copy_binary, write_rows

SERDE = AvroSerde(FileSchemaRegistry())
TOPIC_OF = {spec.table: topic for topic, spec in TOPIC_TABLES.items()}


def random_record(schema: dict, rng: random.Random, i: int) -> dict:
    """A record with awkward but valid values: big and negative longs, unicode, every enum symbol."""
    out = {}
    for f in strip_logical_types(schema)["fields"]:
        t, name = f["type"], f["name"]
        if isinstance(t, list):
            if rng.random() < 0.3:
                out[name] = None
                continue
            t = [b for b in t if b != "null"][0]
        kind = t["type"] if isinstance(t, dict) else t
        if kind == "enum":
            out[name] = t["symbols"][i % len(t["symbols"])]
        elif kind == "string":
            out[name] = rng.choice(["binance", "bybit", "BTCUSDT", "1000PEPEUSDT", "Ω-test", ""]) + str(i % 7)
        elif kind == "double":
            out[name] = rng.choice([0.0, -0.0, 1e-12, 123456.789, -42.5, 2.0**60, rng.uniform(-1e6, 1e6)])
        elif kind in ("long", "int"):
            if name.endswith("_time"):  # Unix ms between 1990 and 2090
                out[name] = rng.randint(631_152_000_000, 3_786_912_000_000)
            elif name in ("agg_id",):
                out[name] = i  # the natural key: unique per row
            else:
                out[name] = rng.choice([0, -1, 63, 64, -65, 2**31 - 1, -(2**62), 2**62, rng.randint(-(10**9), 10**9)])
                if kind == "int":
                    out[name] = max(-(2**31), min(2**31 - 1, out[name]))
        elif kind == "boolean":
            out[name] = bool(i % 2)
    return out


def _unique_records(table: str, n: int, seed: int) -> list[dict]:
    schema = SERDE.registry.schema_for(SERDE.schema_id(TOPIC_OF[table]))
    spec = TABLES[table]
    rng = random.Random(seed)
    seen, out, i = set(), [], 0
    while len(out) < n:
        r = random_record(schema, rng, i)
        i += 1
        key = tuple(r[c] for c in spec.natural_key)
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out


def _dump(conninfo: str, table: str) -> list[tuple]:
    with psycopg.connect(conninfo) as conn:
        cols = ", ".join(TABLES[table].columns)
        return sorted(conn.execute(f"SELECT {cols} FROM {table}").fetchall(), key=repr)


@pytest.mark.integration
@pytest.mark.parametrize("table", sorted(COLUMNAR))
def test_columnar_rows_equal_record_by_record_rows(migrated_database, table):
    spec = TABLES[table]
    records = _unique_records(table, 1_500, seed=len(table))
    values = [SERDE.encode(TOPIC_OF[table], r) for r in records]
    codec = ColumnarCodec.for_topic(spec, SERDE, TOPIC_OF[table])
    assert codec is not None
    with psycopg.connect(migrated_database) as conn:
        assert write_rows(conn, spec, [spec.to_row(SERDE.decode(v)) for v in values]) == len(values)
        conn.commit()
    by_record = _dump(migrated_database, table)
    with psycopg.connect(migrated_database) as conn:
        conn.execute(f"TRUNCATE {table}")
        parts = [codec.encode(values[i : i + 400]) for i in range(0, len(values), 400)]
        assert copy_binary(conn, spec, copy_payload([p.data for p in parts]), len(values)) == len(values)
        conn.commit()
    assert _dump(migrated_database, table) == by_record
    times = [r[spec.time_column] for r in records]
    assert min(p.min_ms for p in parts) == min(times) and max(p.max_ms for p in parts) == max(times)
    assert set().union(*(p.days for p in parts)) == {t // 86_400_000 for t in times}


@pytest.mark.integration
def test_a_redelivered_payload_is_absorbed_by_the_natural_key(migrated_database):
    spec = TABLES["trades"]
    values = [SERDE.encode("md.trades", r) for r in _unique_records("trades", 300, seed=7)]
    codec = ColumnarCodec.for_topic(spec, SERDE, "md.trades")
    first = copy_payload([codec.encode(values[:200]).data])
    overlapping = copy_payload([codec.encode(values[100:]).data])  # 100 already stored, 100 new
    with psycopg.connect(migrated_database) as conn:
        assert copy_binary(conn, spec, first, 200) == 200
        assert copy_binary(conn, spec, overlapping, 200) == 100
        conn.commit()
        assert conn.execute("SELECT count(*) FROM trades").fetchone()[0] == 300


@pytest.mark.integration
@pytest.mark.parametrize("table", sorted(COLUMNAR))
def test_direct_copy_tables_have_the_copy_types(migrated_database, table):
    """Binary COPY straight into the table needs its column types to be the staging types."""
    spec = TABLES[table]
    with psycopg.connect(migrated_database) as conn:
        types = dict(
            conn.execute(
                "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
                "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
                (table,),
            ).fetchall()
        )
    names = {
        "text": "text",
        "int8": "bigint",
        "int4": "integer",
        "float8": "double precision",
        "timestamptz": "timestamp with time zone",
        "bool": "boolean",
    }
    assert {c: types[c] for c in spec.columns} == {c: names[t] for c, t in zip(spec.columns, spec.copy_types)}


def _trade_values(n: int = 5) -> list[bytes]:
    return [SERDE.encode("md.trades", r) for r in _unique_records("trades", n, seed=3)]


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda v: v[:4] + [v[4] + b"\x01"],  # a trailing byte on the last record
        lambda v: v[:2] + [v[2] + b"\x01"] + v[3:],  # ... on a middle one
        lambda v: v[:4] + [v[4][:-1]],  # truncated
        lambda v: v[:2] + [b""] + v[3:],  # empty value
        lambda v: v[:2] + [b"garbage"] + v[3:],  # not Avro at all
        lambda v: v[:4] + [v[4][:-1] + b"\x08"],  # enum index out of range
        lambda v: v[:4] + [b"\x00\x00\x00\x00\x63" + v[4][5:]],  # another schema id
        lambda v: v[:4] + [v[4][:5] + v[4][6:] + v[4][5:6]],  # bytes moved around
    ],
    ids=["trailing-last", "trailing-middle", "truncated", "empty", "garbage", "enum", "schema-id", "shuffled"],
)
def test_anything_not_provably_right_leaves_the_fast_path(corrupt):
    codec = ColumnarCodec.for_topic(TABLES["trades"], SERDE, "md.trades")
    good = _trade_values()
    assert codec.decode_frame(good).height == 5 and codec.encode(good).rows == 5
    with pytest.raises(ColumnarError):
        codec.decode_frame(corrupt(list(good)))
    with pytest.raises(ColumnarError):  # the compiled walk (sinks._avro_copy) as much as polars' reader
        codec.encode(corrupt(list(good)))


@pytest.mark.parametrize("table", sorted(COLUMNAR))
def test_the_compiled_walk_writes_the_arrow_routes_bytes(table):
    """`encode` (one numba pass, sinks._avro_copy) against `encode_arrow` (polars' Avro reader, then pgpq):
    the same COPY bytes, times and days, on records with nulls, extreme numbers, unicode, every enum symbol."""
    codec = ColumnarCodec.for_topic(TABLES[table], SERDE, TOPIC_OF[table])
    values = [SERDE.encode(TOPIC_OF[table], r) for r in _unique_records(table, 3_000, seed=11)]
    fast, arrow = codec.encode(values), codec.encode_arrow(values)
    assert fast.rows == arrow.rows == 3_000
    assert fast.data == arrow.data
    assert (fast.min_ms, fast.max_ms, fast.days) == (arrow.min_ms, arrow.max_ms, arrow.days)


def _trade_value(**changes) -> bytes:
    record = _unique_records("trades", 1, seed=4)[0]
    return SERDE.encode("md.trades", {**record, **changes})


@pytest.mark.parametrize(
    "value",
    [
        _trade_value(symbol="BTCUSDT").replace(b"BTC", b"\xff\xfeC"),  # not UTF-8
        _trade_value(symbol="BTCUSDT").replace(b"BTC", b"\xed\xa0\x80"),  # a UTF-16 surrogate: not UTF-8
        _trade_value(trade_time=253_402_300_800_000),  # year 10000: no datetime holds it
    ],
    ids=["not-utf8", "surrogate", "year-10000"],
)
def test_values_the_record_path_refuses_leave_the_compiled_walk_too(value):
    """The fast path may not store what the record path would dead-letter."""
    codec = ColumnarCodec.for_topic(TABLES["trades"], SERDE, "md.trades")
    with pytest.raises(ColumnarError):
        codec.encode(_trade_values() + [value])
    with pytest.raises(Exception):  # noqa: B017 # the record path's own error, whichever it is
        TABLES["trades"].to_row(SERDE.decode(value))


def test_only_flat_one_to_one_tables_take_the_fast_path():
    assert ColumnarCodec.for_topic(TABLES["features"], SERDE, "features") is None
    assert ColumnarCodec.for_topic(TABLES["depth_updates"], SERDE, "md.depth") is None
    for table in COLUMNAR:
        assert ColumnarCodec.for_topic(TABLES[table], SERDE, TOPIC_OF[table]) is not None, table
        assert topic_spec(TOPIC_OF[table]).name == TOPIC_OF[table]


def test_varint_sizes_are_the_avro_encodings_lengths():
    """Zigzag varints by hand: z = 2x or -2x - 1, one byte per started 7 bits of z."""
    import numpy as np

    from sinks.columnar import varint_sizes

    cases = {
        0: 1,
        -1: 1,
        63: 1,
        -64: 1,
        64: 2,
        -65: 2,
        8191: 2,
        -8192: 2,
        8192: 3,
        -8193: 3,
        2**62 - 1: 9,
        -(2**62): 9,
        2**62: 10,
        -(2**62) - 1: 10,
        2**63 - 1: 10,
        -(2**63): 10,
    }
    got = varint_sizes(np.array(list(cases), dtype=np.int64))
    assert got.tolist() == list(cases.values())


def test_a_bad_record_sends_only_its_share_of_a_batch_down_the_record_path():
    """5,000 trades with one bad record at 3,000 (SPLIT_BELOW 2,000): halves 0-2,499 and 3,750-4,999
    are copied, 2,500-3,749 goes record by record (1,249 rows) and 3,000 is dead-lettered."""
    from confluent_kafka import Message

    from sinks.consumer import Batch, SinkConfig, TopicSink
    from sinks.decoding import SPLIT_BELOW

    assert SPLIT_BELOW == 2_000
    sink = TopicSink(SinkConfig(topics=["md.trades"]), "127.0.0.1:9", "dbname=unused", SERDE)
    values = [SERDE.encode("md.trades", r) for r in _unique_records("trades", 5_000, seed=5)]
    values[3_000] = values[3_000][:-1]  # truncated
    msgs = [Message(topic="md.trades", partition=0, offset=i, key=b"k", value=v) for i, v in enumerate(values)]
    batch = Batch()
    batch.columnar["md.trades"] += msgs
    sink._seal(batch)
    assert batch.copy_rows["trades"] == 3_750 and len(batch.copies["trades"]) == 2
    assert len(batch.rows["trades"]) == 1_249
    assert [dead["offset"] for _, _, dead in batch.dlq] == [3_000]
    assert not batch.columnar


def _chunk(topic: str, values: list[bytes | None], first_offset: int):
    import numpy as np

    from tapeflow_runtime.record_batches import RecordChunk

    lengths = np.array([-1 if v is None else len(v) for v in values], dtype=np.int64)
    return RecordChunk(
        topic,
        0,
        b"".join(v for v in values if v is not None),
        lengths,
        b"k" * len(values),
        np.ones(len(values), dtype=np.int64),
        np.arange(first_offset, first_offset + len(values)),
        first_offset + len(values),
    )


def test_the_raw_fetchers_chunks_encode_as_the_same_messages_would():
    """Two chunks of a batch (the raw fetcher's records of two fetches) are encoded at once, into the
    same COPY rows as the same records as librdkafka messages."""
    from confluent_kafka import Message

    from sinks.consumer import Batch, SinkConfig, TopicSink

    sink = TopicSink(SinkConfig(topics=["md.trades"]), "127.0.0.1:9", "dbname=unused", SERDE)
    values = [SERDE.encode("md.trades", r) for r in _unique_records("trades", 3_000, seed=7)]
    raw, plain = Batch(), Batch()
    raw.columnar["md.trades"] += [_chunk("md.trades", values[:1_200], 0), _chunk("md.trades", values[1_200:], 1_200)]
    plain.columnar["md.trades"] += [
        Message(topic="md.trades", partition=0, offset=i, key=b"k", value=v) for i, v in enumerate(values)
    ]
    sink._seal(raw)
    sink._seal(plain)
    assert raw.copy_rows["trades"] == 3_000 and b"".join(raw.copies["trades"]) == b"".join(plain.copies["trades"])
    assert raw.min_time == plain.min_time and raw.max_time == plain.max_time and raw.days == plain.days


def test_a_bad_record_in_a_raw_chunk_is_dead_lettered_with_its_offset_and_the_rest_stored():
    """A chunk with a truncated record and a null value: the chunk goes the way of messages (halved down
    to the bad ones), both are dead-lettered with their offsets and key, every other row is stored."""
    from sinks.consumer import Batch, SinkConfig, TopicSink

    sink = TopicSink(SinkConfig(topics=["md.trades"]), "127.0.0.1:9", "dbname=unused", SERDE)
    values: list[bytes | None] = [SERDE.encode("md.trades", r) for r in _unique_records("trades", 5_000, seed=9)]
    values[1_000] = values[1_000][:-1]
    values[4_321] = None
    batch = Batch()
    batch.columnar["md.trades"].append(_chunk("md.trades", values, 70_000))
    sink._seal(batch)
    stored = batch.copy_rows["trades"] + len(batch.rows["trades"])
    assert stored == 4_998
    assert sorted(dead["offset"] for _, _, dead in batch.dlq) == [71_000, 74_321]
    assert all(key == b"k" for _, key, _ in batch.dlq)


def test_a_nul_in_a_text_field_is_dead_lettered_not_written():
    """PostgreSQL text cannot hold NUL: the compiled pass refuses the record and the record path
    dead-letters it, instead of a write that would fail for ever (and stop the sink at that batch)."""
    from sinks.consumer import Batch, SinkConfig, TopicSink

    sink = TopicSink(SinkConfig(topics=["md.trades"]), "127.0.0.1:9", "dbname=unused", SERDE)
    values = [SERDE.encode("md.trades", r) for r in _unique_records("trades", 3_000, seed=13)]
    values[2_222] = _trade_value(symbol="BT\x00C", agg_id=10**9)
    batch = Batch()
    batch.columnar["md.trades"].append(_chunk("md.trades", values, 0))
    sink._seal(batch)
    assert batch.copy_rows["trades"] + len(batch.rows["trades"]) == 2_999
    assert [dead["offset"] for _, _, dead in batch.dlq] == [2_222]
    assert "NUL" in batch.dlq[0][2]["error"]
