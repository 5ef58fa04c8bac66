"""The `topics` and `db` sources give the run the in-memory session gives: the same generated session
is published to md.* on the real broker (the producers' Publisher) and written to PostgreSQL (the
sink's own table writer), then backtested from each. Signals (ids, scores, tiers) and closed trades
(every column) must be identical, so neither source loses, duplicates, reorders or alters an input."""

from __future__ import annotations

import psycopg
import pytest

from backtest.inputs import RECORD_KINDS
from backtest.runner import BacktestRunner
from backtest.sources.database import DatabaseSource
from backtest.sources.synthetic import SyntheticSource
from backtest.sources.topics import TopicSource
from schemas.registry import FileSchemaRegistry
from schemas.serde import AvroSerde
from sinks.migrate import migrate
from sinks.tables import table_for_topic, write_rows
from stream_apps.core.events import BookRecord, book_levels
from stream_apps.core.strategy import parse_strategy
from tests.support.stored_sources import store_session

pytestmark = pytest.mark.integration

H = 3_600_000
START = 1_704_067_200_000  # 2024-01-01 00:00 UTC
END = START + 3 * H
SYMBOLS = ["BTCUSDT", "ETHUSDT"]
RATES = {"BTCUSDT": 2.0, "ETHUSDT": 1.5}
# every input kind counts: direction, crowding (ratios), environment (OI), funding, liquidations; OBI gate
STRATEGY = parse_strategy(
    {
        "name": "stored",
        "version": "1",
        "windows": {"cvd_fast": "5m", "cvd_mid": "30m"},
        "warmup": "30m",
        "weights": {"direction": 55, "crowding": 25, "environment": 15, "auxiliary": 0, "funding": 5, "liquidation": 5},
        "thresholds": {"entry": 55, "heavy": 75, "flip": 75},
        "cooldown": "5m",
        "gates": {"obi_against": {"default": 0.6}, "on_missing_input": "pass"},
        "exits": {"sl_atr_mult": 1.0, "tp1_r": 0.5, "tp2_r": 1.0, "timeout_min": 30},
    }
)
TOPIC_OF = {"books": "md.book", "marks": "md.mark", "liquidations": "md.liquidations", "indicators": "md.indicators"}


def session() -> SyntheticSource:
    return SyntheticSource(SYMBOLS, START, END, seed=11, trades_per_s=RATES)


def trade_records(batch) -> list[dict]:
    return [
        {
            "exchange": batch.exchange,
            "symbol": batch.symbol,
            "agg_id": int(a),
            "price": float(p),
            "qty": float(q),
            "first_trade_id": int(a),
            "last_trade_id": int(a),
            "event_time": int(t),
            "trade_time": int(t),
            "receive_time": int(t) + 5,
            "taker_side": "SELL" if s else "BUY",
        }
        for a, t, p, q, s in zip(batch.agg_id, batch.time_ms, batch.price, batch.qty, batch.taker_sell)
    ]


def all_records() -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {"md.trades": []} | {TOPIC_OF[k]: [] for k in RECORD_KINDS}
    for block in session().blocks():
        for batch in block.trades.values():
            out["md.trades"] += trade_records(batch)
        for kind in RECORD_KINDS:
            out[TOPIC_OF[kind]] += block.records[kind]
    return out


def run(source):
    return BacktestRunner([STRATEGY]).run(source)


def test_topics_and_database_sources_reproduce_the_session(kafka_bootstrap, database, topic_prefix):
    reference = run(session())
    assert reference.signals >= 3 and len(reference.trades) >= 2, (
        "the session must trade for the comparison to mean anything"
    )

    records = all_records()
    store_session(kafka_bootstrap, topic_prefix, database, records)

    from_topics = run(TopicSource(kafka_bootstrap, SYMBOLS, START, END, topic_prefix=topic_prefix))
    from_db = run(DatabaseSource(database, SYMBOLS, START, END))
    for result in (from_topics, from_db):
        assert result.trades_processed == reference.trades_processed
        assert result.events_processed == reference.events_processed
        assert result.evaluations == reference.evaluations
        assert result.signals == reference.signals
        assert result.trades == reference.trades  # every column of every closed position
        assert result.coverage == reference.coverage
        assert result.missing == []
    # the generated session, the database and the topics' bytes hold the levels as arrays: their book
    # records carry them as columns (what the book detectors read), equal to what reading the records'
    # levels gives
    topics = TopicSource(kafka_bootstrap, SYMBOLS, START, END, topic_prefix=topic_prefix).records()["books"]
    order = lambda r: (r["symbol"], r["event_time"])  # noqa: E731 - partitions interleave the symbols
    assert sorted(topics, key=order) == sorted(records["md.book"], key=order)  # the records, equal to the serde's
    for source in (session(), DatabaseSource(database, SYMBOLS, START, END), topics):
        books = source if isinstance(source, list) else [r for block in source.blocks() for r in block.records["books"]]
        assert books and all(type(r) is BookRecord for r in books)
        for r in books:
            expected = book_levels(dict(r))
            assert (r.columns.n_bids, r.columns.data.tobytes()) == (expected.n_bids, expected.data.tobytes())


def test_the_binary_copy_trade_reader_gives_the_row_readers_columns(database):
    """Field by field, hour by hour: the columnar reader (binary COPY into numpy) against the row
    reader it replaced, on trades the sink's own writer stored (extreme prices and quantities, both
    sides, several symbols and exchanges) and on a few stored with sub-millisecond times."""
    import numpy as np

    from backtest.sources.database import _dt, parse_trade_copy
    from tests.support.db_rows import row_reader_trades

    rng = np.random.default_rng(22)
    records = []
    for exchange, symbol, n in (("binance", "BTCUSDT", 4000), ("binance", "ETHUSDT", 1500), ("bybit", "BTCUSDT", 700)):
        times = np.sort(rng.integers(START - H, END + H, n))
        for k, t in enumerate(times):
            price = float(rng.choice([1e-8, 0.5, 30_000.123456789, 1.7976931348623157e308, float(rng.random()) * 1e5]))
            records.append(
                {
                    "exchange": exchange,
                    "symbol": symbol,
                    "agg_id": 10**12 + k,
                    "price": price,
                    "qty": float(rng.random()) * 10 ** int(rng.integers(-6, 6)),
                    "first_trade_id": k,
                    "last_trade_id": k,
                    "event_time": int(t),
                    "trade_time": int(t),
                    "receive_time": int(t) + 3,
                    "taker_side": "SELL" if rng.random() < 0.5 else "BUY",
                }
            )
    migrate(database)
    with psycopg.connect(database) as conn:
        spec = table_for_topic("md.trades")
        assert write_rows(conn, spec, (spec.to_row(r) for r in records)) == len(records)
        conn.execute(
            "INSERT INTO trades SELECT exchange, symbol, agg_id + 1000000, price, qty, first_trade_id, "
            "last_trade_id, event_time, trade_time + interval '250 microseconds' * (agg_id % 4), receive_time, "
            "taker_side FROM trades WHERE symbol = 'ETHUSDT' AND agg_id % 7 = 0"
        )
        conn.commit()
    source = DatabaseSource(database, ["BTCUSDT", "ETHUSDT"], START - H, END + H)
    compared = 0
    with psycopg.connect(database) as conn:
        for start in range(START - H, END + H, H):
            new = source._trades(conn, start, start + H)
            for symbol in ("BTCUSDT", "ETHUSDT"):
                old = row_reader_trades(conn, "binance", symbol, start, start + H)
                batch = new.get(f"binance:{symbol}")
                assert (old is None) == (batch is None)
                if old is None:
                    continue
                assert batch.agg_id.tolist() == old["agg_id"].tolist()
                assert batch.time_ms.tolist() == old["time_ms"].tolist()
                assert batch.price.tolist() == old["price"].tolist() and batch.qty.tolist() == old["qty"].tolist()
                assert batch.taker_sell.tolist() == old["sell"].tolist()
                compared += len(old["agg_id"])
    assert compared == sum(1 for r in records if r["exchange"] == "binance") + sum(
        1 for r in records if r["symbol"] == "ETHUSDT" and r["agg_id"] % 7 == 0
    )
    # an answer in any other layout is refused, not misread; the source then reads that hour row by row
    with pytest.raises(ValueError):
        parse_trade_copy(b"PGCOPY\n\xff\r\n\x00" + bytes(8) + bytes(10) + b"\xff\xff")
    with psycopg.connect(database) as conn:
        hour = {"symbols": ["BTCUSDT", "ETHUSDT"], "exchange": "binance"}
        for start in range(START - H, END + H, H):
            fallback = DatabaseSource._trades_rows(conn, hour | {"lo": _dt(start), "hi": _dt(start + H)})
            new = source._trades(conn, start, start + H)
            assert sum(len(b.agg_id) for b in new.values()) == (0 if fallback is None else len(fallback["agg_id"]))
            if fallback is not None:
                assert np.concatenate([b.time_ms for b in new.values()]).tolist() == fallback["time_ms"].tolist()


def test_the_topics_sources_columnar_trade_decoding_equals_record_by_record():
    """md.trades values decoded many at a time (the sink's columnar decoder) give the batches the
    record-by-record decoder gives, also when a chunk has to fall back to it (a record written with
    another schema id), filtered to the asked symbols, exchange and range and in (time, agg id) order."""
    import numpy as np

    import backtest.sources.topics as topics_module
    from backtest.sources.records import trade_block

    serde = AvroSerde(FileSchemaRegistry())
    records = []
    for block in session().blocks():
        for batch in block.trades.values():
            records += trade_records(batch)
    records += [
        dict(records[0], exchange="bybit"),
        dict(records[1], symbol="SOLUSDT"),
        dict(records[2], trade_time=END + 1, agg_id=10**9),
    ]
    rng = np.random.default_rng(5)
    shuffled = [records[i] for i in rng.permutation(len(records))]  # partitions interleave symbols
    values = [serde.encode("md.trades", r) for r in shuffled]
    wanted = [
        r for r in records if r["exchange"] == "binance" and r["symbol"] in SYMBOLS and START <= r["trade_time"] < END
    ]
    reference = trade_block(wanted)
    source = TopicSource("127.0.0.1:1", SYMBOLS, START, END)
    odd = bytearray(values[7])
    odd[1:5] = (999).to_bytes(4, "big")  # another schema id: that chunk is decoded record by record
    decoded_one_by_one = []
    plain_decode = source.serde.decode

    def decode(value):
        decoded_one_by_one.append(value)
        return plain_decode(values[7] if value == bytes(odd) else value)

    source.serde.decode = decode
    for label, given in (("columnar", values), ("fallback", values[:7] + [bytes(odd)] + values[8:])):
        topics_module.DECODE_CHUNK = 1000
        try:
            got = source._trades(given)
        finally:
            topics_module.DECODE_CHUNK = 200_000
        assert sorted(got) == sorted(reference), label
        for key, batch in reference.items():
            for column in ("agg_id", "time_ms", "price", "qty", "taker_sell"):
                assert getattr(got[key], column).tolist() == getattr(batch, column).tolist(), (label, key, column)
        # the columnar run decoded nothing one by one; the fallback only its first chunk of 1000
        assert len(decoded_one_by_one) == (0 if label == "columnar" else 1000), label
