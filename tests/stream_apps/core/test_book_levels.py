"""Book levels as columns (``stream_apps.core.events.BookLevels``, ``book_levels``): a form a source
may hand the engine instead of the md.book record, so the book detectors read arrays rather than 40
dicts a snapshot. The decoders (``book_from_record``, ``record_column``) keep references to plain
records (reading them costs 4-8 µs a record, which a run with the detectors off would pay for nothing)
and hand on the columns a source attached (``BookRecord``: the record, with its levels as arrays).

Hand-built records in every form the detectors take (an md.book record, a pair of ``{"price",
"qty"}`` items, a pair of ``(price, qty)`` pairs; unordered, duplicated, invalid and more than 64
levels, empty sides, no levels): the columns hold the values the dict read gives, the detectors give
the same logs, state and values fed either, the plain-data form reads back exactly, and the engine's
output (batches, a snapshot restore with pending snapshots) is the same with columns as with dicts;
book records are the records they were built from and carry what the dict read gives.
"""

from __future__ import annotations

import copy
import json
import math

import numpy as np

from stream_apps.core.detectors import BookDetectors, BookParams
from stream_apps.core.detectors.book import MAX_LEVELS, flatten_levels
from stream_apps.core.engine import Engine
from stream_apps.core.events import (
    BookBatch,
    BookLevels,
    BookRecord,
    BookUpdate,
    book_from_record,
    book_levels,
    book_record,
    object_column,
    record_column,
)
from tests.stream_apps.core.test_book_detectors import SECTION, U, engine_items
from tests.stream_apps.core.test_detectors import strategy
from tests.stream_apps.core.test_flow_detectors import run_engine

T0 = 1_700_000_040_000
NAN = math.nan


def record(bids, asks, **extra):
    return {
        "exchange": "binance",
        "symbol": "BTCUSDT",
        "event_time": T0,
        "obi_10": 0.1,
        "bids": [{"price": p, "qty": q} for p, q in bids],
        "asks": [{"price": p, "qty": q} for p, q in asks],
        **extra,
    }


DEEP = [(100.0 - 0.01 * i, 1.0 + i % 3) for i in range(1, 80)]  # more than MAX_LEVELS
LEVELS = [
    record([(99.99, 1), (99.98, 2.5)], [(100.01, 1), (100.02, 3)]),
    ([{"price": 99.99, "qty": 2}, {"price": 99.97, "qty": 9}], [{"price": 100.02, "qty": 1}]),
    ([(99.99, 1.5), [99.98, 1]], [(100.01, 2), (100.03, 0.5)]),
    ([(99.97, 1), (99.99, 4), (99.98, 2)], [(100.03, 1), (100.01, 7), (100.01, 2)]),  # unordered, duplicate
    ([(99.99, NAN), (0.0, 1), (-5.0, 1), (99.98, 0.0), (99.96, 1e-12), (99.95, math.inf)], [(100.01, 1)]),
    (DEEP, [(100.0 + 0.01 * i, 2.0) for i in range(1, 70)]),
    record([], [(100.02, 1)]),
    {"bids": None, "asks": [{"price": 100.01, "qty": 2}]},
    ([], []),
    None,
    record([(99.99, 3)], []),
]


def sides(flat):
    """Per snapshot and side: (prices, quantities) as lists (NaN as None), or None without levels."""
    prices, qtys, starts, qstarts, counts = flat
    out = []
    for k in range(len(counts)):
        row = []
        for side in range(2):
            c = int(counts[k, side])
            if c < 0:
                row.append(None)
                continue
            p, q = prices[starts[k, side] : starts[k, side] + c], qtys[qstarts[k, side] : qstarts[k, side] + c]
            row.append(
                [[None if math.isnan(v) else v for v in p.tolist()], [None if math.isnan(v) else v for v in q.tolist()]]
            )
        out.append(row)
    return out


def test_columns_hold_what_the_dict_read_gives():
    columns = [book_levels(item) for item in LEVELS]
    assert all(type(c) is BookLevels for c, item in zip(columns, LEVELS) if item is not None)
    assert columns[LEVELS.index(None)] is None and book_levels(columns[0]) is columns[0]
    assert sides(flatten_levels(columns)) == sides(flatten_levels(LEVELS))  # all at once
    for item, column in zip(LEVELS, columns):  # and one by one, mixed with the other forms
        assert sides(flatten_levels([column])) == sides(flatten_levels([item]))
        assert sides(flatten_levels([item, column, None])) == sides(flatten_levels([item, item, None]))
    many = columns * 4  # more than a few: the numpy form, against the per-snapshot loop of a few
    assert len(many) > 16 and sides(flatten_levels(many)) == sum((sides(flatten_levels([c])) for c in many), [])
    deep = sides(flatten_levels([columns[5]]))[0]
    assert len(deep[0][0]) == MAX_LEVELS and deep[0][0][0] == DEEP[0][0]  # the first 64 as listed
    assert columns[0].prices.tolist() == [99.99, 99.98, 100.01, 100.02] and columns[0].n_bids == 2
    assert columns[0].qtys.tolist() == [1.0, 2.5, 1.0, 3.0]


def test_the_decoders_keep_references_and_the_plain_form_reads_back_exactly():
    rec = LEVELS[0]
    update = book_from_record(rec)
    assert update.levels is rec and update.time_ms == T0 and update.obi == 0.1  # not read when detectors are off
    column = record_column([rec, LEVELS[6]])
    assert column[0] is rec and column[1] is LEVELS[6]
    assert book_levels(LEVELS[6]).n_bids == 0 and book_levels(LEVELS[6]).prices.tolist() == [100.02]
    for item in LEVELS:
        levels = book_levels(item)
        if levels is None:
            continue
        back = book_levels(json.loads(json.dumps(levels.pairs())))
        assert back.n_bids == levels.n_bids
        np.testing.assert_array_equal(back.data, levels.data)


def as_book_record(item):
    """``LEVELS``' records as a source holding arrays builds them (``book_record``); others as they are."""
    if not isinstance(item, dict) or "exchange" not in item:
        return item
    fields = {k: v for k, v in item.items() if k not in ("bids", "asks")}
    bids, asks = item["bids"], item["asks"]
    return book_record(
        fields,
        [lv["price"] for lv in bids],
        [lv["qty"] for lv in bids],
        [lv["price"] for lv in asks],
        [lv["qty"] for lv in asks],
    )


def test_an_object_column_holds_each_form_of_levels_as_one_cell():
    levels = BookLevels(np.array([100.0, 101.0, 2.0, 3.0]), 1)
    record = {"bids": [{"price": 100.0, "qty": 2.0}], "asks": [{"price": 101.0, "qty": 3.0}]}
    pair = ([(100.0, 2.0)], [(101.0, 3.0)])  # numpy alone would make it a row (or a 3-d array)
    for items in ([record, levels, None], [pair, pair], [[[100.0, 2.0]], None, levels], []):
        column = object_column(items)
        assert column.dtype == object and column.shape == (len(items),)
        assert all(cell is item for cell, item in zip(column, items, strict=True))
    batch = BookBatch.from_arrays("binance", "BTCUSDT", [1, 2], [0.1, 0.2], [pair, record])
    assert batch.levels[0] is pair and batch.levels[1] is record


def test_a_book_record_is_the_record_and_carries_what_the_dict_read_gives():
    records = [as_book_record(item) for item in LEVELS]
    made = [(r, item) for r, item in zip(records, LEVELS) if type(r) is BookRecord]
    assert len(made) == 3
    for rec, item in made:
        assert rec == item and list(rec)[-3:] == ["bids", "asks", "obi_10"]  # the same record, the schema's order
        expected = book_levels(item)
        assert rec.columns.n_bids == expected.n_bids and rec.columns.data.tobytes() == expected.data.tobytes()
        assert book_levels(rec) is rec.columns and book_from_record(rec).levels is rec.columns
        for back in (copy.deepcopy(rec), copy.copy(rec)):  # (the protocol pickling uses too)
            assert (
                type(back) is BookRecord and back == rec and back.columns.data.tobytes() == rec.columns.data.tobytes()
            )
        assert json.loads(json.dumps(rec)) == item
    column = record_column([made[0][0], LEVELS[1]])
    assert column[0] is made[0][0].columns and column[1] is LEVELS[1]
    assert sides(flatten_levels(records)) == sides(flatten_levels(LEVELS))
    without = BookRecord(LEVELS[0], None)  # no columns: read as the record
    assert sides(flatten_levels([without])) == sides(flatten_levels([LEVELS[0]]))
    assert book_from_record(without).levels is without


def test_the_detectors_give_the_same_logs_state_and_values_fed_columns_or_dicts():
    params = BookParams(
        wall_multiple=2.0,
        wall_band_bps=50.0,
        wall_window_ms=60_000,
        iceberg_min_refills=2,
        iceberg_band_bps=50.0,
        iceberg_window_ms=60_000,
    )
    times = T0 + 500 * np.arange(len(LEVELS), dtype=np.int64)
    trade_times = times - 100
    trade_prices = np.array([99.99, 100.01, 99.98, 99.99, 100.01, 99.99, 100.02, 100.01, 99.99, 99.99, 99.99])
    units = np.full(len(LEVELS), 2 * U, dtype=np.int64)
    sells = np.array([True, False] * 5 + [True])
    runs = []
    for form in (LEVELS, [book_levels(item) for item in LEVELS], [as_book_record(item) for item in LEVELS]):
        for size in (len(LEVELS), 3, 1):
            d = BookDetectors(params)
            keys, values = [], []
            for lo in range(0, len(LEVELS), size):
                part = slice(lo, lo + size)
                log = d.update(times[part], form[part], trade_times[part], trade_prices[part], units[part], sells[part])
                keys += np.asarray(log.keys if log.keys is not None else [], dtype=np.int64).tolist()
                values += np.asarray(log.values if log.values is not None else [], dtype=float).reshape(-1, 7).tolist()
            read = d.values_many(times + 250)
            runs.append(
                (
                    json.dumps([keys, values]),
                    json.dumps(d.to_dict()),
                    json.dumps({k: v.tolist() for k, v in read.items()}),
                )
            )
    assert all(run == runs[0] for run in runs)
    assert len(json.loads(runs[0][0])[0]) > 0


def test_the_engine_gives_the_same_output_fed_columns_and_resumes_with_pending_columns():
    items = engine_items()[:2000]
    columns = [
        (kind, BookUpdate(p.exchange, p.symbol, p.time_ms, p.obi, book_levels(p.levels)))
        if kind == "event"
        else (kind, p)
        for kind, p in items
    ]
    reference = run_engine(Engine([strategy(detectors=SECTION)]), items, 1000)
    assert any(f["inputs"].get("wall_bid_usd", NAN) > 0 for f in reference.features)  # walls were seen
    assert run_engine(Engine([strategy(detectors=SECTION)]), columns, 1000).features == reference.features
    half = len(columns) // 2
    first = Engine([strategy(detectors=SECTION)])
    out = run_engine(first, columns[:half], 50)
    snapshot = json.loads(json.dumps(first.to_dict()))
    pending = [e for e in snapshot["pending_events"] if e["type"] == "BookUpdate"]
    assert pending and all(e["levels"] is not None for e in pending)  # the columns' plain form
    resumed = Engine.from_dict(snapshot, [strategy(detectors=SECTION)])
    assert all(type(lv) is BookLevels for batch in resumed._pending_books.values() for lv in batch.levels)
    out.extend(run_engine(resumed, columns[half:], 50))
    assert out.features == reference.features
