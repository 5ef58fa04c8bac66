"""md.trades fetches decoded in one columnar read equal the record-by-record decode, and anything the
columnar path cannot read exactly falls back to it (where dead letters are made)."""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass

import numpy as np
import pytest

from schemas.avro_columns import AvroColumns, ColumnarError
from schemas.registry import FileSchemaRegistry
from schemas.serde import AvroSerde
from stream_apps.faust_app.inputs import COLUMNAR_MIN, TRADES, decode_partition

SERDE = AvroSerde(FileSchemaRegistry())


@dataclass
class Raw:
    offset: int
    key: bytes | None
    value: bytes | None


def trades(n: int, seed: int = 7) -> list[Raw]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        symbol = rng.choice(["BTCUSDT", "ETHUSDT", "SOLUSDT"])
        t = 1_700_000_000_000 + i * 37 + rng.randrange(5)
        record = {
            "exchange": rng.choice(["binance", "bybit"]),
            "symbol": symbol,
            "agg_id": 10_000 + i,
            "price": round(rng.uniform(1, 90_000), 2),
            "qty": rng.uniform(0.001, 50.0),
            "first_trade_id": i,
            "last_trade_id": i + rng.randrange(3),
            "event_time": t,
            "trade_time": t - 3,
            "receive_time": t + 20,
            "taker_side": rng.choice(["BUY", "SELL"]),
        }
        out.append(Raw(5_000 + 2 * i, f"{record['exchange']}:{symbol}".encode(), SERDE.encode(TRADES, record)))
    return out


def as_tuples(decoded) -> dict[str, tuple]:
    return {
        key: (
            rows.exchange,
            rows.symbol,
            rows.offsets.tolist(),
            rows.agg_id.tolist(),
            rows.time_ms.tolist(),
            rows.price.tolist(),
            rows.qty.tolist(),
            rows.taker_sell.tolist(),
        )
        for key, rows in decoded.trades.items()
    }


@pytest.fixture(scope="module")
def reader() -> AvroColumns:
    r = AvroColumns.of_topic(SERDE, TRADES)
    assert r is not None
    return r


@pytest.mark.parametrize("n", [COLUMNAR_MIN, 1000])
def test_a_columnar_fetch_equals_the_record_by_record_decode(reader, n):
    raw = trades(n)
    by_record = decode_partition(SERDE, TRADES, "p.md.trades", 3, raw)
    columnar = decode_partition(SERDE, TRADES, "p.md.trades", 3, raw, trades=reader)
    assert as_tuples(columnar) == as_tuples(by_record) and len(columnar.trades) == 6
    assert columnar.dead == [] and columnar.events == {}
    for rows in columnar.trades.values():  # the engine's dtypes, as the record path builds them
        assert (rows.offsets.dtype, rows.agg_id.dtype, rows.time_ms.dtype, rows.price.dtype, rows.taker_sell.dtype) == (
            np.int64,
            np.int64,
            np.int64,
            np.float64,
            np.bool_,
        )
        assert rows.offsets.tolist() == sorted(rows.offsets.tolist())


def test_a_malformed_trade_falls_back_to_the_record_path_and_is_a_dead_letter(reader):
    raw = trades(200)
    good = raw[100].value
    raw[100] = Raw(raw[100].offset, raw[100].key, good[:-3])  # truncated: its neighbours would shift
    raw[150] = Raw(raw[150].offset, raw[150].key, good[:-3] + struct.pack(">d", 1.0)[:3])  # same length, wrong bytes
    columnar = decode_partition(SERDE, TRADES, "p.md.trades", 0, raw, trades=reader)
    by_record = decode_partition(SERDE, TRADES, "p.md.trades", 0, raw)
    assert as_tuples(columnar) == as_tuples(by_record)
    assert [d.offset for d in columnar.dead] == [d.offset for d in by_record.dead] and raw[100].offset in [
        d.offset for d in columnar.dead
    ]


def test_a_record_of_another_schema_id_falls_back(reader):
    raw = trades(100)
    v = raw[10].value
    raw[10] = Raw(
        raw[10].offset, raw[10].key, v[:1] + (int.from_bytes(v[1:5], "big") + 1000).to_bytes(4, "big") + v[5:]
    )
    with pytest.raises(ColumnarError, match="another schema id"):
        reader.decode_frame([r.value for r in raw])
    columnar = decode_partition(SERDE, TRADES, "p.md.trades", 0, raw, trades=reader)
    assert as_tuples(columnar) == as_tuples(decode_partition(SERDE, TRADES, "p.md.trades", 0, raw))
    assert [d.offset for d in columnar.dead] == [raw[10].offset]
