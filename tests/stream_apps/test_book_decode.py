"""md.book straight from Avro bytes to columns (``stream_apps.book_decode``).

Records encoded by the serde (generated: 0-40 levels a side, NaN, infinite, zero and negative values,
non-ASCII symbols) and arrays split into several blocks, some with their byte size (what other Avro
writers may send): the fast reader gives what the serde and ``book_from_record`` give, levels read
as ``book_levels`` reads the dicts, byte for byte, and as a record (the topics source) the serde's
record with those columns. Fuzzed bodies (truncated, bytes changed or added):
the fast reader fails where the serde fails and agrees where it reads. A writer schema of another
layout goes through the serde. ``decode_partition`` hands the engine columns for md.book.
"""

from __future__ import annotations

import io
import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
from fastavro import parse_schema, schemaless_writer
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.registry import FileSchemaRegistry
from schemas.serde import AvroSerde, frame_header
from stream_apps.book_decode import LAYOUT, BookDecoder, decode_book, layout
from stream_apps.core.events import BookLevels, BookRecord, book_from_record, book_levels
from stream_apps.faust_app.inputs import decode_partition
from tests.support.avro import zigzag_varint
from tests.support.fuzz import FUZZ

SERDE = AvroSerde(FileSchemaRegistry())
ODD = [math.nan, math.inf, -math.inf, 0.0, -1.5, 1e-300, 5e-324]


def record(rng: np.random.Generator, n_bids: int, n_asks: int, symbol: str = "BTCUSDT") -> dict:
    def side(n: int, sign: float) -> list[dict]:
        prices = 30_000 + sign * 0.1 * np.arange(1, n + 1)
        qtys = rng.lognormal(0.0, 1.0, n)
        levels = [{"price": float(p), "qty": float(q)} for p, q in zip(prices, qtys)]
        for level in levels:
            if rng.random() < 0.1:
                level["qty" if rng.random() < 0.5 else "price"] = float(rng.choice(ODD))
        return levels

    return {
        "exchange": "binance",
        "symbol": symbol,
        "last_update_id": int(rng.integers(0, 2**62)),
        "event_time": 1_700_000_000_000 + int(rng.integers(-(10**6), 10**9)),
        "receive_time": 1_700_000_000_050,
        "bids": side(n_bids, -1.0),
        "asks": side(n_asks, 1.0),
        "obi_10": float(rng.uniform(-1, 1)),
    }


def slow(data: bytes):
    update = book_from_record(SERDE.decode(data))
    return update, book_levels(update.levels)


def same(fast, data: bytes) -> None:
    update, levels = slow(data)
    assert (fast.exchange, fast.symbol, fast.time_ms) == (update.exchange, update.symbol, update.time_ms)
    assert np.float64(fast.obi).tobytes() == np.float64(update.obi).tobytes()
    assert type(fast.levels) is BookLevels and fast.levels.n_bids == levels.n_bids
    assert fast.levels.data.tobytes() == levels.data.tobytes()


def test_the_fast_reader_gives_what_the_serde_and_the_dict_read_give():
    rng = np.random.default_rng(3)
    decoder, records = BookDecoder(SERDE), BookDecoder(SERDE, records=True)
    for k in range(300):
        rec = record(rng, int(rng.integers(0, 41)), int(rng.integers(0, 41)), "ÄÖ-ß" if k % 50 == 0 else "ETHUSDT")
        data = SERDE.encode("md.book", rec)
        same(decoder(data), data)
        full = records(data)  # the record itself (the topics source), keys in order, with its columns
        assert type(full) is BookRecord and json.dumps(full) == json.dumps(SERDE.decode(data))
        assert full.columns.data.tobytes() == book_levels(SERDE.decode(data)).data.tobytes()
    assert layout(SERDE.registry.schema_for(SERDE.schema_id("md.book"))) == LAYOUT  # the avsc it was written for


def test_arrays_in_several_blocks_with_and_without_their_size():
    rng = np.random.default_rng(4)
    rec = record(rng, 7, 5)
    header = frame_header(SERDE.schema_id("md.book"))
    head = io.BytesIO()
    schemaless_writer(
        head,
        parse_schema(
            {
                "type": "record",
                "name": "H",
                "fields": [
                    {"name": "exchange", "type": "string"},
                    {"name": "symbol", "type": "string"},
                    {"name": "last_update_id", "type": "long"},
                    {"name": "event_time", "type": "long"},
                    {"name": "receive_time", "type": "long"},
                ],
            }
        ),
        rec,
    )

    def levels(items, cuts, sized):
        body = b""
        for lo, hi in zip([0, *cuts], [*cuts, len(items)]):
            payload = b"".join(np.array([lv["price"], lv["qty"]], dtype="<f8").tobytes() for lv in items[lo:hi])
            body += (
                zigzag_varint(-(hi - lo)) + zigzag_varint(len(payload)) if sized else zigzag_varint(hi - lo)
            ) + payload
        return body + zigzag_varint(0)

    data = (
        header
        + head.getvalue()
        + levels(rec["bids"], [2, 3], sized=True)
        + levels(rec["asks"], [4], sized=False)
        + np.float64(rec["obi_10"]).astype("<f8").tobytes()
    )
    assert json.dumps(SERDE.decode(data), sort_keys=True) == json.dumps(rec, sort_keys=True)  # valid, as fastavro reads
    same(decode_book(data), data)


@settings(FUZZ, max_examples=300)
@given(
    seed=st.integers(0, 2**32 - 1),
    edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=4),
    cut=st.integers(0, 10_000),
    extra=st.binary(max_size=3),
)
def test_a_damaged_body_fails_where_the_serde_fails_and_agrees_where_it_reads(seed, edits, cut, extra):
    rng = np.random.default_rng(seed)
    data = bytearray(SERDE.encode("md.book", record(rng, int(rng.integers(0, 6)), int(rng.integers(0, 6)))))
    for at, byte in edits:
        data[5 + at % (len(data) - 5)] = byte  # the body; the header is the serde's business
    data = bytes(data[: 5 + cut % (len(data) - 4)]) + extra
    try:
        slow(data)
    except Exception:  # noqa: BLE001 - whatever the serde raises, the fast reader must raise too
        with pytest.raises(Exception):  # noqa: B017, PT011
            decode_book(data)
        return
    same(decode_book(data), data)


def test_another_writer_layout_goes_through_the_serde():
    current = SERDE.registry.schema_for(SERDE.schema_id("md.book"))
    swapped = {
        **current,
        "fields": [f for f in current["fields"] if f["name"] != "bids"]
        + [f for f in current["fields"] if f["name"] == "bids"],
    }  # bids moved last: another layout
    swapped["fields"][-1] = {**swapped["fields"][-1], "type": {"type": "array", "items": "PriceLevel"}}
    swapped["fields"][5] = {
        **swapped["fields"][5],
        "type": next(f["type"] for f in current["fields"] if f["name"] == "bids"),
    }
    assert layout(swapped) != LAYOUT
    files = FileSchemaRegistry()
    registry = SimpleNamespace(id_for=files.id_for, schema_for=lambda i: swapped if i == 999 else files.schema_for(i))
    serde = AvroSerde(registry)
    rec = record(np.random.default_rng(5), 3, 2)
    buf = io.BytesIO()
    schemaless_writer(buf, parse_schema(swapped), rec)
    update = BookDecoder(serde)(frame_header(999) + buf.getvalue())
    assert type(BookDecoder(serde, records=True)(frame_header(999) + buf.getvalue())) is dict  # the serde's record
    assert update.levels is not None and book_levels(update.levels).n_bids == 3  # read right: the serde's path
    np.testing.assert_array_equal(book_levels(update.levels).data[:3], [lv["price"] for lv in rec["bids"]])


def test_decode_partition_hands_the_engine_columns_for_md_book():
    rng = np.random.default_rng(6)
    records = [record(rng, 20, 20, symbol) for symbol in ("BTCUSDT", "ETHUSDT", "BTCUSDT")]
    raw = [SimpleNamespace(offset=10 + i, key=None, value=SERDE.encode("md.book", r)) for i, r in enumerate(records)]
    raw.append(SimpleNamespace(offset=13, key=None, value=raw[0].value[:-3]))  # truncated: a dead letter
    out = decode_partition(SERDE, "md.book", "md.book", 0, raw)
    assert [o for o, _ in out.events["binance:BTCUSDT"]] == [10, 12] and len(out.events["binance:ETHUSDT"]) == 1
    for (_, event), value in zip(out.events["binance:BTCUSDT"], (raw[0].value, raw[2].value)):
        same(event, value)
    assert [d.offset for d in out.dead] == [13]


def test_a_serde_that_decoded_md_book_is_freed_with_its_owner():
    """A serde (and its registry, ~0.5 MB) goes with its owner: nothing in the decoding may keep it (a
    module-level decoder cache keyed weakly by the serde would, since each decoder holds its serde).
    With the caller's decoder (the processor's) and without one."""
    import gc
    import weakref

    rng = np.random.default_rng(7)
    raw = [SimpleNamespace(offset=0, key=None, value=SERDE.encode("md.book", record(rng, 5, 5)))]
    for own_decoder in (False, True):
        serde = AvroSerde(FileSchemaRegistry())
        decoder = BookDecoder(serde) if own_decoder else None
        out = decode_partition(serde, "md.book", "e1.md.book", 0, raw, decoder)
        assert len(out.events["binance:BTCUSDT"]) == 1 and not out.dead
        gone = weakref.ref(serde)
        del serde, decoder
        gc.collect()
        assert gone() is None
