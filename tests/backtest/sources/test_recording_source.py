"""The recording source's md.book records: the Binance producer's records (``book_snapshot_record``),
carrying their levels as columns (``BookRecord``) equal to what reading the records' levels gives."""

from __future__ import annotations

from backtest.sources.recording import RecordingSource, write_recording
from backtest.sources.synthetic import SyntheticSource
from producers.base.book import OrderBookSync
from producers.base.venue import book_snapshot_record
from stream_apps.core.events import BookRecord, book_levels

START = 1_704_067_200_000  # 2024-01-01 00:00 UTC
END = START + 20 * 60_000
SYMBOLS = ["BTCUSDT", "ETHUSDT"]


def test_book_records_are_the_producers_records_with_their_levels_as_columns(tmp_path):
    recording = write_recording(
        SyntheticSource(SYMBOLS, START, END, seed=3, trades_per_s=1.0).blocks(), tmp_path / "recording"
    )
    books = RecordingSource(recording, SYMBOLS, START, END).records()["books"]
    assert {r["symbol"] for r in books} == set(SYMBOLS) and len(books) > 100
    for r in books:
        assert type(r) is BookRecord and r["bids"] and r["asks"]
        expected = book_levels(dict(r))
        assert (r.columns.n_bids, r.columns.data.tobytes()) == (expected.n_bids, expected.data.tobytes())
        assert r["bids"][0]["price"] < r["asks"][0]["price"]


def test_the_records_fields_are_the_producers():
    book = OrderBookSync("BTCUSDT")
    book.bids, book.asks = {100.0: 1.0, 99.5: 2.0, 99.0: 0.5}, {100.5: 3.0, 101.0: 1.5}
    book.last_update_id, book.last_event_time = 42, 1_000
    record = book_snapshot_record("binance", book, 2, now_ms=1_005)
    assert record == {
        "exchange": "binance",
        "symbol": "BTCUSDT",
        "last_update_id": 42,
        "event_time": 1_000,
        "receive_time": 1_005,
        "bids": [{"price": 100.0, "qty": 1.0}, {"price": 99.5, "qty": 2.0}],
        "asks": [{"price": 100.5, "qty": 3.0}, {"price": 101.0, "qty": 1.5}],
        "obi_10": (3.0 - 4.5) / 7.5,
    }
    assert list(record) == [
        "exchange",
        "symbol",
        "last_update_id",
        "event_time",
        "receive_time",
        "bids",
        "asks",
        "obi_10",
    ]  # the schema's order
