"""The `db` source's mark reader (binary COPY into columns, what makes a week of markPrice@1s rows
affordable for `strategy simulate`) gives the row reader's records, key for key and value for value,
hour by hour: marks stored by the sink's own table writer (extreme values, several symbols and
exchanges) and a few with sub-millisecond times written directly."""

from __future__ import annotations

import numpy as np
import psycopg
import pytest

from backtest.sources.database import QUERIES, BinaryLayoutError, DatabaseSource, _dt, parse_mark_copy
from sinks.tables import table_for_topic, write_rows

pytestmark = pytest.mark.integration

H = 3_600_000
START = 1_704_067_200_000  # 2024-01-01 00:00 UTC
SYMBOLS = ["BTCUSDT", "ETHUSDT", "XRPUSDT"]


def marks() -> list[dict]:
    rng = np.random.default_rng(31)
    out = []
    for exchange, symbol, n in (("binance", "BTCUSDT", 900), ("binance", "ETHUSDT", 600), ("bybit", "BTCUSDT", 200)):
        times = np.unique(rng.integers(START - H, START + 2 * H, n))
        for t in times.tolist():
            price = float(rng.choice([1e-8, 0.61234, 30_000.123456789, 1.7976931348623157e308]))
            out.append(
                {
                    "exchange": exchange,
                    "symbol": symbol,
                    "mark_price": price,
                    "index_price": price * (1 + float(rng.normal(0, 1e-4))),
                    "funding_rate": float(rng.normal(0, 1e-3)),
                    "next_funding_time": (t // (8 * H) + 1) * 8 * H,
                    "event_time": t,
                    "receive_time": t + int(rng.integers(1, 50)),
                }
            )
    return out


def test_the_copy_mark_reader_gives_the_row_readers_records(migrated_database):
    records = marks()
    with psycopg.connect(migrated_database) as conn:
        spec = table_for_topic("md.mark")
        assert write_rows(conn, spec, (spec.to_row(r) for r in records)) == len(records)
        conn.execute(  # sub-millisecond times, half a millisecond among them (rounded half to even)
            "INSERT INTO mark_prices SELECT exchange, 'XRPUSDT', mark_price, index_price, funding_rate, "
            "next_funding_time + interval '500 microseconds', event_time + interval '250 microseconds' * "
            "(extract(epoch FROM event_time)::bigint % 4), receive_time + interval '1500 microseconds' "
            "FROM mark_prices WHERE symbol = 'ETHUSDT'"
        )
        conn.commit()
    source = DatabaseSource(migrated_database, SYMBOLS, START - H, START + 2 * H)
    compared, symbols = 0, set()
    with psycopg.connect(migrated_database) as conn:
        for lo in range(START - H, START + 2 * H, H):
            rows = conn.execute(QUERIES["marks"], ("binance", SYMBOLS, _dt(lo), _dt(lo + H))).fetchall()
            old = [DatabaseSource._record("marks", row) for row in rows]
            new = source._marks(conn, lo, lo + H)
            assert [list(r.items()) for r in new] == [list(r.items()) for r in old]  # keys in order, values
            assert all(type(a) is type(b) for n, o in zip(new, old) for a, b in zip(n.values(), o.values()))
            compared += len(old)
            symbols |= {r["symbol"] for r in new}
    binance = [r for r in records if r["exchange"] == "binance"]
    assert compared == len(binance) + sum(1 for r in binance if r["symbol"] == "ETHUSDT")
    assert symbols == set(SYMBOLS)
    # an answer in another layout is refused, not misread (the source then reads the hour row by row)
    with pytest.raises(BinaryLayoutError):
        parse_mark_copy(b"PGCOPY\n\xff\r\n\x00" + bytes(8) + bytes(10) + b"\xff\xff", SYMBOLS, "binance")
