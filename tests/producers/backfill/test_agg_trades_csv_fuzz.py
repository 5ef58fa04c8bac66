"""Vision aggTrades CSV rows at their edges (producers/backfill/agg_trades_csv.py).

Why: the backfill dead-letters a row only when the row reader hands it to `on_bad`; an exception
escaping the reader ends the whole backfill, and a row it yields with a value the Avro schema
cannot hold fails later, at encoding, with no line number. The backtest reads the same files with
the columnar (pyarrow) reader and falls back to the row reader when that returns None. So: every
line becomes a trade or a bad row (one each), every trade has finite positive prices and 64-bit ids;
the only error is a `BackfillError` for a header without the columns, naming the file on one line;
and whenever the columnar reader accepts a file, the row reader reads the same trades from it.
"""

from __future__ import annotations

import io

from hypothesis import example, given
from hypothesis import strategies as st

from producers.backfill.agg_trades_csv import COLUMNS, AggTradeCsvReader, BadRow, read_agg_trade_columns
from producers.backfill.errors import BackfillError
from tests.support.fuzz import FUZZ, one_line

HEADER = ",".join(COLUMNS)
GOOD = "26129,0.01633102,4.70443515,27781,27781,1498793709153,true"
INT64_MAX = 2**63 - 1

# a field as a broken archive might have it; no quotes or line breaks, so one line is one row
field = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.decimals(allow_nan=True, allow_infinity=True).map(str),
    st.sampled_from(
        [
            "true",
            "false",
            "TRUE",
            " False ",
            "yes",
            "",
            "nan",
            "inf",
            "1e400",
            "1_000",
            "١٢٣",
            "\ufeffagg_trade_id",
            "agg_trade_id",
            "price",
            "0x1f",
        ]
    ),
    st.text(st.characters(blacklist_characters='",\r\n', blacklist_categories=("Cs",)), max_size=6),
)
line = st.one_of(st.just(GOOD), st.just(HEADER), st.lists(field, min_size=0, max_size=9).map(",".join))


def read(text: bytes) -> tuple[list[dict], list[BadRow]]:
    bad: list[BadRow] = []
    trades = list(
        AggTradeCsvReader(
            io.BytesIO(text),
            source="BTCUSDT-aggTrades-2024-01-01.csv",
            symbol="BTCUSDT",
            receive_time=1,
            on_bad=bad.append,
        )
    )
    return trades, bad


def _check_trade(t: dict) -> None:
    assert 0 < t["price"] < float("inf") and 0 < t["qty"] < float("inf"), t
    assert 0 <= t["agg_id"] <= INT64_MAX and 0 <= t["first_trade_id"] <= t["last_trade_id"] <= INT64_MAX, t
    assert 0 < t["trade_time"] <= INT64_MAX and t["taker_side"] in ("BUY", "SELL"), t


@FUZZ
@given(lines=st.lists(line, max_size=12))
# found by this property: ids beyond 64 bits were yielded (Avro encoding and the backtest's int64
# arrays then failed with no line number)
@example(lines=[f"1,1.0,1.0,1,{2**63},1,true"])
@example(lines=[f"{2**64},1.0,1.0,1,1,1,false"])
@example(lines=["", "\ufeffagg_trade_id"])  # found at 10,000 examples: the test's own oracle looked at line 1
def test_every_line_is_a_trade_or_a_bad_row(lines):
    data = "\n".join(lines).encode()
    try:
        trades, bad = read(data)
    except BackfillError as exc:  # a first row naming agg_trade_id but lacking other columns
        first_row = next(ln for ln in lines if ln)  # blank lines before it are skipped
        assert "BTCUSDT-aggTrades-2024-01-01.csv" in one_line(exc) and "agg_trade_id" in first_row.lower()
        return
    for t in trades:
        _check_trade(t)
    for b in bad:
        one_line(ValueError(str(b)))
    rows = [ln for ln in lines if ln]  # csv skips empty lines
    header = 1 if rows and "agg_trade_id" in rows[0].replace("\ufeff", "").lower().split(",") else 0
    assert len(trades) + len(bad) == len(rows) - header, (len(trades), [str(b) for b in bad])


@FUZZ
@given(
    head=st.lists(st.just(GOOD), max_size=2),
    size=st.integers(131_073, 140_000),
    tail=st.lists(st.just(GOOD), max_size=2),
)
# found by this property: a line longer than the csv module's field limit raised csv.Error out of the
# reader (the backfill stopped); now that line is a bad row and the rows after it are read
@example(head=[GOOD], size=200_000, tail=[GOOD])
def test_an_overlong_line_is_one_bad_row(head, size, tail):
    trades, bad = read("\n".join([*head, "9" * size, *tail]).encode())
    assert len(trades) == len(head) + len(tail)
    assert len(bad) == 1 and bad[0].line == len(head) + 1 and "unreadable CSV line" in str(bad[0])


@FUZZ
@given(data=st.one_of(st.binary(max_size=200), st.lists(line, max_size=8).map(lambda ls: "\n".join(ls).encode())))
# found by this property: a header naming agg_trade_id but lacking columns raised BackfillError (with
# no file name) from the columnar reader instead of leaving the file to the row reader
@example(data=b"agg_trade_id,price\n1,2\n")
@example(data=b'"\n1,2')  # an unterminated quote
def test_the_columnar_reader_accepts_only_what_the_row_reader_reads_cleanly(data):
    """None means "read it row by row"; columns mean the same trades as the row reader's, no bad row."""
    cols = read_agg_trade_columns(io.BytesIO(data))
    if cols is None:
        return
    trades, bad = read(data)
    assert bad == []
    assert [
        (
            t["agg_id"],
            t["price"],
            t["qty"],
            t["first_trade_id"],
            t["last_trade_id"],
            t["trade_time"],
            t["taker_side"] == "SELL",
        )
        for t in trades
    ] == [
        (int(a), float(p), float(q), int(f), int(la), int(ts), bool(s))
        for a, p, q, f, la, ts, s in zip(
            cols.agg_id,
            cols.price,
            cols.qty,
            cols.first_trade_id,
            cols.last_trade_id,
            cols.time_ms,
            cols.taker_sell,
            strict=True,
        )
    ]


@FUZZ
@given(
    rows=st.lists(
        st.tuples(
            st.integers(0, INT64_MAX),
            st.decimals(min_value="0.00000001", max_value="1e9", places=8),
            st.integers(0, 2**40),
            st.integers(0, 100),
            st.integers(1, INT64_MAX),
            st.booleans(),
        ),
        max_size=8,
    ),
    header=st.booleans(),
)
def test_well_formed_rows_parse_to_their_fields(rows, header):
    lines = ([HEADER] if header else []) + [
        f"{a},{p},{p},{f},{f + d},{t},{str(m).lower()}" for a, p, f, d, t, m in rows
    ]
    trades, bad = read("\n".join(lines).encode())
    assert bad == []
    assert [
        (t["agg_id"], t["price"], t["first_trade_id"], t["last_trade_id"], t["trade_time"], t["taker_side"])
        for t in trades
    ] == [(a, float(p), f, f + d, t, "SELL" if m else "BUY") for a, p, f, d, t, m in rows]
