"""Avro decode at its edge (schemas/serde.py): framed bytes from Kafka, whatever they hold.

Why: every consumer (sinks, engine, executor, replay) decodes with `AvroSerde.decode` and dead-letters
a record whose decode raises a `SchemaError` (`WireFormatError`, `UnknownSchemaIdError`, ...);
fastavro itself raises EOFError, IndexError, UnicodeDecodeError, struct.error, MemoryError or
OverflowError on corrupt bodies, and only the serde's translation keeps those from ending a consumer
or reaching its log as a multi-line trace. So: a valid record of every topic survives the round trip
unchanged; a valid message cut short, with a byte flipped or bytes appended, and any bytes at all,
decode to a record or raise a one-line `SchemaError`.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from schemas.avsc import load_avsc, strip_logical_types
from schemas.catalogue import all_topics
from schemas.errors import SchemaError
from schemas.registry import FileSchemaRegistry
from schemas.serde import AvroSerde
from tests.support.fuzz import FUZZ, outcome

TOPICS = sorted(t.name for t in all_topics())
LONG = st.integers(-(2**63), 2**63 - 1)


@pytest.fixture(scope="module")
def serde() -> AvroSerde:
    return AvroSerde(FileSchemaRegistry(), strict=True)


def _strategy(schema: Any, named: dict[str, Any]) -> st.SearchStrategy:
    """Records valid for an Avro schema (the serde's logical-type-free twin)."""
    if isinstance(schema, str):
        if schema in named:
            return _strategy(named[schema], named)
        return {
            "null": st.none(),
            "boolean": st.booleans(),
            "int": st.integers(-(2**31), 2**31 - 1),
            "long": LONG,
            "double": st.floats(allow_nan=False),
            "float": st.floats(width=32, allow_nan=False),
            "string": st.text(max_size=12),
            "bytes": st.binary(max_size=12),
        }[schema]
    if isinstance(schema, list):
        return st.one_of([_strategy(s, named) for s in schema])
    kind = schema["type"]
    if kind == "record":
        named[schema["name"]] = schema
        named[schema["name"].rpartition(".")[2]] = schema
        fields = {f["name"]: _strategy(f["type"], named) for f in schema["fields"]}
        return st.fixed_dictionaries(fields)
    if kind == "enum":
        named[schema["name"]] = schema
        named[schema["name"].rpartition(".")[2]] = schema
        return st.sampled_from(schema["symbols"])
    if kind == "array":
        return st.lists(_strategy(schema["items"], named), max_size=3)
    if kind == "map":
        return st.dictionaries(st.text(max_size=6), _strategy(schema["values"], named), max_size=3)
    return _strategy(kind, named)


def records(topic: str) -> st.SearchStrategy[dict]:
    from schemas.catalogue import topic as topic_spec

    return _strategy(strip_logical_types(load_avsc(topic_spec(topic).value_schema)), {})


topic_records = st.sampled_from(TOPICS).flatmap(lambda t: st.tuples(st.just(t), records(t)))


@FUZZ
@given(case=topic_records)
def test_a_valid_record_of_every_topic_round_trips(serde, case):
    topic, record = case
    assert serde.decode(serde.encode(topic, record)) == record


def _decoded_or_schema_error(serde: AvroSerde, data: bytes, topic: str | None = None) -> None:
    record, _ = outcome(serde.decode, data, topic=topic, errors=SchemaError)
    assert record is None or isinstance(record, dict)


@FUZZ
@given(
    case=topic_records,
    how=st.sampled_from(["cut", "flip", "append", "insert"]),
    at=st.integers(0, 10_000),
    junk=st.binary(min_size=1, max_size=16),
)
def test_a_damaged_message_decodes_or_is_a_schema_error(serde, case, how, at, junk):
    topic, record = case
    data = serde.encode(topic, record)
    i = at % len(data)
    damaged = {
        "cut": data[:i],
        "flip": data[:i] + bytes([data[i] ^ junk[0]]) + data[i + 1 :],
        "append": data + junk,
        "insert": data[:i] + junk + data[i:],
    }[how]
    _decoded_or_schema_error(serde, damaged)
    _decoded_or_schema_error(serde, damaged, topic=topic)


@FUZZ
@given(data=st.binary(max_size=64), schema_id=st.sampled_from([None, "known"]))
# a huge length prefix for a string/array (zig-zag varint) right after a valid header
@example(data=b"\xff\xff\xff\xff\xff\xff\xff\xff\x7f", schema_id="known")
@example(data=b"\x01", schema_id="known")  # a negative block count
def test_any_bytes_decode_or_are_a_schema_error(serde, data, schema_id):
    if schema_id == "known":
        data = (
            serde.encode(
                "md.trades",
                {
                    "exchange": "binance",
                    "symbol": "BTCUSDT",
                    "agg_id": 1,
                    "price": 1.0,
                    "qty": 1.0,
                    "first_trade_id": 1,
                    "last_trade_id": 1,
                    "event_time": 1,
                    "trade_time": 1,
                    "receive_time": 1,
                    "taker_side": "BUY",
                },
            )[:5]
            + data
        )
    _decoded_or_schema_error(serde, data)
