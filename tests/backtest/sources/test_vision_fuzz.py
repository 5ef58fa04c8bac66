"""Vision files other than aggTrades at their edges (backtest/sources/vision.py): metrics,
fundingRate, markPriceKlines, bookDepth and bookTicker CSVs.

Why: a backtest reads years of these archives; a row that cannot be read must be listed in the run's
report (`SourceReport.bad_rows`) and skipped, never end the run with a traceback, and a row that is
read must not carry a NaN or an infinite number into the engine (a NaN mark price or open interest
turns every later feature and score into NaN without a word). So each reader, on any lines, returns
finite values, and each data line is either a value or a listed bad row.
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from backtest.sources import SourceError
from backtest.sources.vision import VisionSource, relative_path
from producers.backfill.errors import BackfillError
from tests.support.fuzz import FUZZ, one_line

S = "BTCUSDT"
DAY = date(2024, 1, 15)
START = int(datetime(2024, 1, 15, tzinfo=UTC).timestamp() * 1000)

GOOD = {
    "metrics": (
        "create_time,symbol,sum_open_interest,sum_open_interest_value,count_toptrader_long_short_ratio,"
        "sum_toptrader_long_short_ratio,count_long_short_ratio,sum_taker_long_short_vol_ratio",
        "2024-01-15 00:05:00,BTCUSDT,80000.1,3400000000.5,1.5,1.2,1.8,0.9",
    ),
    "markPriceKlines": (
        "open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume,"
        "taker_buy_quote_volume,ignore",
        f"{START},42000.1,42010,41990,42005.5,0,{START + 59_999},0,60,0,0,0",
    ),
    "fundingRate": ("calc_time,funding_interval_hours,last_funding_rate", f"{START + 8 * 3_600_000},8,0.0001"),
    "bookDepth": (
        "timestamp,percentage,depth,notional",
        "2024-01-15 00:00:09,-1.00,1234.5,51834567.2\n2024-01-15 00:00:09,1.00,1034.5,43834567.2",
    ),
    "bookTicker": (
        "update_id,best_bid_price,best_bid_qty,best_ask_price,best_ask_qty,transaction_time,event_time",
        f"3993633458813,42000.1,3.2,42000.2,1.1,{START + 1000},{START + 1001}",
    ),
}

field = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.decimals(allow_nan=True, allow_infinity=True).map(str),
    st.sampled_from(
        [
            "",
            "nan",
            "inf",
            "-Infinity",
            "1e400",
            "2024-01-15 00:05:00",
            "2024-13-45 00:00:00",
            "9999-12-31 23:59:59",
            "-1.00",
            "1.00",
            "BTCUSDT",
            "²",
            "１２",
        ]
    ),
    st.text(st.characters(blacklist_characters='",\r\n', blacklist_categories=("Cs",)), max_size=6),
)


def lines_for(kind: str) -> st.SearchStrategy[list[str]]:
    header, good = GOOD[kind]
    width = len(header.split(","))
    row = st.one_of(
        st.just(good),
        st.lists(field, min_size=width, max_size=width).map(",".join),
        st.lists(field, max_size=width + 2).map(",".join),
    )
    return st.tuples(st.sampled_from([[header], []]), st.lists(row, max_size=8)).map(lambda hr: hr[0] + hr[1])


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """One Vision tree for the module: each example rewrites its file (a fresh tree per example spent
    most of the time removing directories)."""
    return tmp_path_factory.mktemp("vision-fuzz")


def read(root: Path, kind: str, lines: list[str]):
    """What the source makes of one file of `kind` holding `lines`, and its report's bad rows."""
    for other in GOOD:  # only this kind's file exists
        (root / "data" / relative_path(other, S, DAY)).with_suffix(".csv").unlink(missing_ok=True)
    path = (root / "data" / relative_path(kind, S, DAY)).with_suffix(".csv")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines), encoding="utf-8")
    src = VisionSource([S], START, START + 86_400_000, directory=root)
    try:
        if kind == "metrics":
            got = [(r["event_time"], r["value"], *r["extra"].values()) for r in src._metrics(S, DAY)]
        elif kind == "markPriceKlines":
            got = src._mark_klines(S, DAY)
        elif kind == "fundingRate":
            got = src._settlements(S, DAY)
        elif kind == "bookDepth":
            got = src._book_depth(S, DAY)
        else:
            got = src._book_ticker(S, DAY)
    except (SourceError, BackfillError) as exc:
        one_line(exc)
        return None, src.report.bad_rows
    return got, src.report.bad_rows


def _finite(values) -> bool:
    return all(math.isfinite(x) for v in values for x in v if isinstance(x, float))


@FUZZ
@given(case=st.sampled_from(sorted(GOOD)).flatmap(lambda k: st.tuples(st.just(k), lines_for(k))))
# found by this property (each ended the backtest with a traceback or let the number through):
@example(case=("metrics", [GOOD["metrics"][0], "2024-01-15 00:05:00,BTCUSDT,1,:,1,1,1,1"]))  # ValueError
@example(case=("metrics", ["symbol,sum_open_interest", "BTCUSDT,1"]))  # KeyError: 'create_time'
@example(case=("bookTicker", [GOOD["bookTicker"][0], "0,0,0,0,Infinity,0,0"]))  # inf quantity read
@example(case=("markPriceKlines", [f"{START},1,1,1,nan,0,{START + 59_999},0,1,0,0,0"]))  # NaN mark price read
@example(case=("fundingRate", ["9" * 140_000]))  # csv.Error: field larger than field limit
def test_every_row_is_a_finite_value_or_a_listed_bad_row(root, case):
    kind, lines = case
    got, bad = read(root, kind, lines)
    for text in bad:
        one_line(ValueError(text))
    if got is not None:
        assert _finite(got), f"{kind}: non-finite value read from {lines!r}: {got!r}"


@FUZZ
@given(kind=st.sampled_from(sorted(GOOD)), n=st.integers(1, 5), header=st.booleans())
def test_well_formed_files_read_without_bad_rows(root, kind, n, header):
    head, good = GOOD[kind]
    header = header or kind in ("metrics", "bookDepth")  # their first field is a time: a header is how the
    got, bad = read(root, kind, ([head] if header else []) + [good] * n)  # reader tells (Vision files have one)
    assert bad == [] and got, (kind, got, bad)
