"""Backfill building blocks without a broker: arguments, CSV parsing, continuity, checkpoints, downloads.

Expected values are written out by hand or derived from how the test input was built
(tests.support.backfill), never from the code under test.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from datetime import date
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from producers.backfill import BackfillError, ChecksumMismatchError, run_backfill
from producers.backfill.agg_trades_csv import AggTradeCsvReader, BadRow, open_archive, read_agg_trade_columns
from producers.backfill.checkpoint import Checkpoint, DayResult
from producers.backfill.continuity import ArchiveContinuity
from producers.backfill.days import day_range, normalise_symbol, parse_day
from producers.backfill.sources import LocalDirectory, VisionDownloader
from producers.backfill.summary import REPORT_LIMIT, BackfillSummary, format_summary
from producers.backfill.vision_files import archive_url, parse_checksum
from tests.support.backfill import (
    HEADER,
    ArchiveServer,
    csv_row,
    expected_record,
    stem,
    write_zip,
)

DAY = date(2024, 1, 1)
RT = 1_720_000_000_000


# --- arguments -------------------------------------------------------------------------------------
def test_day_range_is_inclusive_and_crosses_a_leap_day():
    assert day_range(date(2024, 2, 27), date(2024, 3, 1)) == [
        date(2024, 2, 27),
        date(2024, 2, 28),
        date(2024, 2, 29),
        date(2024, 3, 1),
    ]
    assert day_range(DAY, DAY) == [DAY]


def test_bad_arguments_have_clear_errors():
    with pytest.raises(BackfillError, match="--from 2024-01-07 is after --to 2024-01-01"):
        day_range(date(2024, 1, 7), DAY)
    with pytest.raises(BackfillError, match=r"--from '2024-13-01': expected a date \(2024-01-01\)"):
        parse_day("2024-13-01", "--from")
    with pytest.raises(BackfillError, match=r"--to '2024-01-31T12:00': this command works in whole UTC days"):
        parse_day("2024-01-31T12:00", "--to")  # a backfill downloads whole days: a time is not cut silently
    assert parse_day(" 2024-01-31 ") == parse_day("2024-01-31T00:00Z") == date(2024, 1, 31)
    assert normalise_symbol("btcusdt") == "BTCUSDT"
    with pytest.raises(BackfillError, match="not a Binance symbol"):
        normalise_symbol("BTC/USDT")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"start": date(2024, 1, 2), "end": DAY}, "is after --to"),
        ({"symbol": "btc usdt"}, "not a Binance symbol"),
        ({"topic": "md.book"}, "carries book_snapshot records, not trades"),
        ({"topic": "replay/btc"}, "use letters, digits"),
        ({"topic": "dlq.md"}, "dead-letter"),
        ({"directory": Path("/nonexistent/archives")}, "not a directory"),
    ],
)
def test_run_backfill_rejects_bad_arguments_before_touching_the_broker(tmp_path, kwargs, message):
    args = {
        "bootstrap": "127.0.0.1:9",
        "topic_prefix": "",
        "home": tmp_path,
        "symbol": "BTCUSDT",
        "start": DAY,
        "end": DAY,
        "directory": tmp_path,
        "progress": False,
    } | kwargs
    with pytest.raises(BackfillError, match=message):
        run_backfill(**args)


# --- file names and checksums ----------------------------------------------------------------------
def test_archive_url_matches_the_official_layout():
    assert archive_url("https://data.binance.vision/", "BTCUSDT", DAY) == (
        "https://data.binance.vision/data/futures/um/daily/aggTrades/BTCUSDT/BTCUSDT-aggTrades-2024-01-01.zip"
    )


def test_parse_checksum():
    digest = "ab" * 32
    assert (
        parse_checksum(f"{digest.upper()}  BTCUSDT-aggTrades-2024-01-01.zip\n", "BTCUSDT-aggTrades-2024-01-01.zip")
        == digest
    )
    with pytest.raises(BackfillError, match="names 'ETHUSDT"):
        parse_checksum(f"{digest}  ETHUSDT-aggTrades-2024-01-01.zip", "BTCUSDT-aggTrades-2024-01-01.zip")
    with pytest.raises(BackfillError, match="expected '<sha256>  <file name>'"):
        parse_checksum("<Error><Code>NoSuchKey</Code></Error>", "x.zip")


# --- CSV parsing -------------------------------------------------------------------------------------
def parse(lines: list[str], symbol: str = "BTCUSDT") -> tuple[list[dict], list[BadRow], AggTradeCsvReader]:
    bad: list[BadRow] = []
    reader = AggTradeCsvReader(
        io.BytesIO("\n".join(lines).encode()), source="f.csv", symbol=symbol, receive_time=RT, on_bad=bad.append
    )
    return list(reader), bad, reader


def test_header_and_headerless_files_give_the_same_records():
    ids = [7, 8, 9, 10]  # 8 is buyer-maker (taker SELL), the others taker BUY
    rows = [csv_row(i, DAY) for i in ids]
    with_header, bad1, r1 = parse([HEADER, *rows])
    without, bad2, r2 = parse(rows)
    expected = [expected_record(i, DAY, RT) for i in ids]
    assert with_header == expected and without == expected
    assert [t["taker_side"] for t in without] == ["BUY", "SELL", "BUY", "BUY"]
    assert r1.had_header and not r2.had_header and bad1 == bad2 == []


def test_one_row_by_hand():
    trades, bad, _ = parse(["1,42000.10,0.005,10,12,1704067200123,true"], symbol="ETHUSDT")
    assert bad == []
    assert trades == [
        {
            "exchange": "binance",
            "symbol": "ETHUSDT",
            "agg_id": 1,
            "price": 42000.1,
            "qty": 0.005,
            "first_trade_id": 10,
            "last_trade_id": 12,
            "event_time": 1704067200123,
            "trade_time": 1704067200123,
            "receive_time": RT,
            "taker_side": "SELL",
        }
    ]


def test_header_columns_are_found_by_name_with_bom_and_extra_columns():
    header = "\ufeffprice,agg_trade_id,extra,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker"
    trades, bad, reader = parse([header, "42000.10,1,x,0.005,10,12,1704067200123,False"])
    assert bad == [] and reader.had_header
    assert (trades[0]["agg_id"], trades[0]["price"], trades[0]["qty"], trades[0]["taker_side"]) == (
        1,
        42000.1,
        0.005,
        "BUY",
    )


def test_header_missing_a_column_is_an_error_naming_the_file():
    with pytest.raises(BackfillError, match="f.csv: header line lacks column"):
        parse(["agg_trade_id,price,quantity", "1,2,3"])


def test_bad_rows_are_reported_with_line_numbers_and_reasons():
    lines = [
        HEADER,  # 1
        csv_row(1, DAY),  # 2
        "2,abc,0.005,10,10,1704067200123,true",  # 3 not a number
        "3,42000.1,0.005,10,10,1704067200123",  # 4 six fields
        "",  # 5 blank: skipped, not bad
        "4,42000.1,0.005,10,10,1704067200123,maybe",  # 6 not true/false
        "5,-1,0.005,10,10,1704067200123,true",  # 7 price <= 0
        "6,nan,0.005,10,10,1704067200123,true",  # 8 not finite
        "7,42000.1,0.005,12,10,1704067200123,true",  # 9 first > last
        "8,42000.1,0,10,10,1704067200123,true",  # 10 qty 0
        csv_row(9, DAY),  # 11
    ]
    trades, bad, reader = parse(lines)
    assert [t["agg_id"] for t in trades] == [1, 9]
    assert [b.line for b in bad] == [3, 4, 6, 7, 8, 9, 10]
    assert "not a number" in bad[0].reason and "6 fields, expected 7" in bad[1].reason
    assert "'maybe' is not true/false" in bad[2].reason
    assert bad[0].text == lines[2] and str(bad[0]).startswith("f.csv:3: ")
    assert reader.line == 11


def columns_as_records(cols, symbol="BTCUSDT"):
    return [
        {
            "exchange": "binance",
            "symbol": symbol,
            "agg_id": int(a),
            "price": float(p),
            "qty": float(q),
            "first_trade_id": int(f),
            "last_trade_id": int(la),
            "event_time": int(t),
            "trade_time": int(t),
            "receive_time": RT,
            "taker_side": "SELL" if s else "BUY",
        }
        for a, p, q, f, la, t, s in zip(
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


@settings(max_examples=200, deadline=None, database=None)
@given(
    rows=st.lists(
        st.tuples(
            st.integers(0, 2**62),
            st.decimals(min_value="0.00000001", max_value="99999999", places=8, allow_nan=False),
            st.floats(min_value=1e-8, max_value=1e9, allow_nan=False, allow_infinity=False),
            st.integers(0, 2**40),
            st.integers(0, 1000),
            st.integers(1, 2**50),
            st.sampled_from(["true", "false", "True", "False", "TRUE", "FALSE"]),
        ),
        min_size=1,
        max_size=60,
    ),
    header=st.booleans(),
)
def test_the_columnar_reader_equals_the_row_reader_field_by_field(rows, header):
    lines = [HEADER] if header else []
    lines += [f"{a},{p},{q!r},{f},{f + d},{t},{m}" for a, p, q, f, d, t, m in rows]
    expected, bad, _ = parse(lines)
    assert bad == []
    cols = read_agg_trade_columns(io.BytesIO("\n".join(lines).encode()))
    assert cols is not None and columns_as_records(cols) == expected


def test_the_columnar_reader_finds_columns_by_name_and_leaves_every_unclean_file_to_the_row_reader():
    """Any row the row reader rejects sends the whole file to the row reader, which names the bad rows."""
    header = "\ufeffprice,agg_trade_id,extra,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker"
    lines = [header, "42000.10,1,x,0.005,10,12,1704067200123,False", "", "42000.2,2,y,1,13,13,1704067200124,true"]
    cols = read_agg_trade_columns(io.BytesIO("\n".join(lines).encode()))
    assert cols is not None and columns_as_records(cols) == parse(lines)[0]
    good = csv_row(1, DAY)
    for bad in [
        "2,abc,0.005,10,10,1704067200123,true",
        "3,42000.1,0.005,10,10,1704067200123",
        "4,42000.1,0.005,10,10,1704067200123,maybe",
        "5,-1,0.005,10,10,1704067200123,true",
        "6,nan,0.005,10,10,1704067200123,true",
        "6,inf,0.005,10,10,1704067200123,true",
        "7,42000.1,0.005,12,10,1704067200123,true",
        "8,42000.1,0,10,10,1704067200123,true",
        "9,42000.1,0.005,10,10,0,true",
        "-1,42000.1,0.005,10,10,1704067200123,true",
        "10,42000.1,0.005,10,10,1704067200123,1",
        "12,42000.1,0.005,10,10,1704067200123,true,extra",
    ]:
        for lines in ([HEADER, good, bad], [good, bad], [bad, good]):
            assert read_agg_trade_columns(io.BytesIO("\n".join(lines).encode())) is None, (lines, bad)
    assert read_agg_trade_columns(io.BytesIO(b"")) is None


def test_open_archive_reads_a_zip_member_and_rejects_odd_archives(tmp_path):
    path = write_zip(tmp_path, "BTCUSDT", DAY, [HEADER, csv_row(1, DAY)], checksum=None)
    with open_archive(path) as (raw, size):
        body = raw.read()
    assert body.decode().splitlines() == [HEADER, csv_row(1, DAY)] and size == len(body)
    two = tmp_path / "two.zip"
    with zipfile.ZipFile(two, "w") as zf:
        zf.writestr("a.csv", "x")
        zf.writestr("b.csv", "y")
    with pytest.raises(BackfillError, match=r"two.zip: expected exactly one .csv inside, found \['a.csv', 'b.csv'\]"):
        with open_archive(two):
            pass
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"<html>not found</html>")
    with pytest.raises(BackfillError, match="junk.zip: not a readable zip archive"):
        with open_archive(junk):
            pass


# --- continuity ----------------------------------------------------------------------------------------
def feed(cont: ArchiveContinuity, ids: list[int]) -> list[int]:
    out = []
    for i in ids:
        out += [t["agg_id"] for t in cont.offer({"agg_id": i})]
    return out + [t["agg_id"] for t in cont.drain()]


def test_in_order_duplicates_and_a_swap_within_the_window():
    cont = ArchiveContinuity("BTCUSDT", reorder_window=3)
    assert feed(cont, [1, 2, 2, 4, 3, 5, 1]) == [1, 2, 3, 4, 5]
    c = cont.counters
    assert (c.duplicates, c.late, c.gaps, c.missing_ids) == (2, 0, 0, 0)


def test_a_hole_is_given_up_after_the_window_and_a_later_row_is_late_not_duplicate():
    cont = ArchiveContinuity("BTCUSDT", reorder_window=3)
    # 4 and 5 missing; 6, 7, 8 fill the window -> hole 4..5 given up; then 4 arrives late
    assert feed(cont, [1, 2, 3, 6, 7, 8, 9, 4, 9]) == [1, 2, 3, 6, 7, 8, 9]
    c = cont.counters
    assert (c.gaps, c.missing_ids, c.gap_ranges, c.late, c.duplicates) == (1, 2, [(4, 5)], 1, 1)


def test_drain_gives_up_every_open_hole_at_the_end_of_a_file():
    cont = ArchiveContinuity("BTCUSDT", reorder_window=100)
    assert feed(cont, [10, 12, 15, 16]) == [10, 12, 15, 16]
    assert cont.counters.gap_ranges == [(11, 11), (13, 14)] and cont.counters.missing_ids == 3


def test_the_chain_continues_from_a_previous_day():
    cont = ArchiveContinuity("BTCUSDT", reorder_window=2)
    cont.continue_after(99)
    assert feed(cont, [99, 100, 103, 104]) == [100, 103, 104]
    assert cont.counters.duplicates == 1 and cont.counters.gap_ranges == [(101, 102)]


# --- checkpoint ----------------------------------------------------------------------------------------
def test_checkpoint_round_trip_and_partial_day(tmp_path):
    ckpt = Checkpoint.load(tmp_path, "BTCUSDT", "md.trades")
    assert not ckpt.is_complete(DAY) and ckpt.resume_after(DAY) is None
    ckpt.record_progress(DAY, 1234, 40)
    again = Checkpoint.load(tmp_path, "BTCUSDT", "md.trades")
    assert again.resume_after(DAY) == 1234 and again.resume_line(DAY) == 40
    assert again.resume_after(date(2024, 1, 2)) is None
    again.record_complete(DAY, DayResult(rows_published=5, first_agg_id=1230, last_agg_id=1234, gaps=1))
    third = Checkpoint.load(tmp_path, "BTCUSDT", "md.trades")
    assert third.result(DAY) == DayResult(rows_published=5, first_agg_id=1230, last_agg_id=1234, gaps=1)
    assert third.resume_after(DAY) is None and third.partial_day is None
    assert Checkpoint.load(tmp_path, "ETHUSDT", "md.trades").completed == {}  # per (symbol, topic)
    assert Checkpoint.load(tmp_path, "BTCUSDT", "replay.x").completed == {}


def test_one_backfill_per_symbol_and_topic_at_a_time(tmp_path):
    with Checkpoint.locked(tmp_path, "BTCUSDT", "md.trades"):
        with pytest.raises(BackfillError, match="another backfill of BTCUSDT into md.trades is running"):
            with Checkpoint.locked(tmp_path, "BTCUSDT", "md.trades"):
                pass
        with Checkpoint.locked(tmp_path, "BTCUSDT", "replay.x"):  # another topic is independent
            pass
    with Checkpoint.locked(tmp_path, "BTCUSDT", "md.trades"):  # released
        pass


def test_an_unreadable_checkpoint_is_an_error_not_a_silent_restart(tmp_path):
    path = Checkpoint.file_for(tmp_path, "BTCUSDT", "md.trades")
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    with pytest.raises(BackfillError, match="is unreadable"):
        Checkpoint.load(tmp_path, "BTCUSDT", "md.trades")


# --- summary -------------------------------------------------------------------------------------------
def test_summary_lists_the_first_gaps_and_counts_the_rest():
    s = BackfillSummary("BTCUSDT", "md.trades", "2024-01-01", "2024-01-02", days_missing=["2024-01-02"])
    s.add_gaps(REPORT_LIMIT + 3, 100, [(i * 10, i * 10 + 1) for i in range(REPORT_LIMIT + 3)])
    text = format_summary(s)
    assert len(s.gap_ranges) == REPORT_LIMIT and "... and 3 more" in text
    assert "missing days: 2024-01-02" in text
    assert s.to_dict()["days"] == {"done": 0, "skipped": 0, "missing": 1, "resumed": 0}


# --- sources ---------------------------------------------------------------------------------------------
def test_local_directory_prefers_the_zip_and_falls_back_to_csv(tmp_path):
    write_zip(tmp_path, "BTCUSDT", DAY, [csv_row(1, DAY)], checksum=None)
    (tmp_path / f"{stem('BTCUSDT', date(2024, 1, 2))}.csv").write_text(csv_row(2, date(2024, 1, 2)))
    src = LocalDirectory(tmp_path)
    assert src.fetch("BTCUSDT", DAY).path.suffix == ".zip"
    assert src.fetch("BTCUSDT", date(2024, 1, 2)).path.suffix == ".csv"
    assert src.fetch("BTCUSDT", date(2024, 1, 3)) is None


def test_downloader_retries_transient_errors(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    zip_path = write_zip(src, "BTCUSDT", DAY, [csv_row(1, DAY)])
    name = zip_path.name
    files = {
        ArchiveServer.path(name): zip_path.read_bytes(),
        ArchiveServer.path(name + ".CHECKSUM"): (src / f"{name}.CHECKSUM").read_bytes(),
    }
    sleeps: list[float] = []
    with ArchiveServer(files) as server:
        server.failures = {ArchiveServer.path(name): 2}
        dl = VisionDownloader(server.url, tmp_path / "cache", backoff_s=0.5, sleep=sleeps.append)
        got = dl.fetch("BTCUSDT", DAY)
        assert got.origin == "download" and got.path.read_bytes() == zip_path.read_bytes()
        assert sleeps == [0.5, 1.0]

        server.failures = {ArchiveServer.path(name.replace("01.zip", "02.zip") + ".CHECKSUM"): 10}
        with pytest.raises(BackfillError, match="failed after 4 attempts: HTTP 503"):
            dl.fetch("BTCUSDT", date(2024, 1, 2))

        server.failure_status = 403
        server.failures = {ArchiveServer.path(name.replace("01.zip", "03.zip") + ".CHECKSUM"): 1}
        with pytest.raises(BackfillError, match="HTTP 403"):
            dl.fetch("BTCUSDT", date(2024, 1, 3))


def test_a_damaged_cached_archive_is_downloaded_again(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    zip_path = write_zip(src, "BTCUSDT", DAY, [csv_row(1, DAY)])
    name = zip_path.name
    files = {
        ArchiveServer.path(name): zip_path.read_bytes(),
        ArchiveServer.path(name + ".CHECKSUM"): (src / f"{name}.CHECKSUM").read_bytes(),
    }
    with ArchiveServer(files) as server:
        dl = VisionDownloader(server.url, tmp_path / "cache")
        first = dl.fetch("BTCUSDT", DAY)
        assert dl.fetch("BTCUSDT", DAY).origin == "cache"
        first.path.write_bytes(b"bit rot")
        again = dl.fetch("BTCUSDT", DAY)
        assert again.origin == "download"
        assert hashlib.sha256(again.path.read_bytes()).hexdigest() == hashlib.sha256(zip_path.read_bytes()).hexdigest()


def test_local_zip_with_wrong_checksum_names_the_file(tmp_path):
    write_zip(tmp_path, "BTCUSDT", DAY, [csv_row(1, DAY)], checksum="f" * 64)
    with pytest.raises(ChecksumMismatchError, match="BTCUSDT-aggTrades-2024-01-01.zip: SHA-256 .* does not match"):
        LocalDirectory(tmp_path).fetch("BTCUSDT", DAY)


# --- progress ----------------------------------------------------------------------------------------------
def test_progress_is_off_without_a_terminal_and_shows_rows_per_second_with_one():
    from rich.console import Console

    from producers.backfill.progress import NoProgress, RichProgress, make_progress

    assert isinstance(make_progress(True, 3), NoProgress)  # pytest captures stderr: not a terminal
    assert isinstance(make_progress(False, 3), NoProgress)
    out = io.StringIO()
    bar = RichProgress(2, console=Console(file=out, force_terminal=True, width=140))
    bar.start_day(DAY, 1_000)
    bar.update_day(500, 12_345)
    bar.end_day()
    bar.end_day()  # a skipped day
    bar.close()
    text = out.getvalue()
    assert "2024-01-01" in text and "12,345 rows" in text and "rows/s" in text
    assert bar._progress.tasks[0].completed == 2 and len(bar._progress.tasks) == 1  # finished days are removed


def test_the_cli_to_is_excluded_as_everywhere(tmp_path):
    """`backfill binance-vision --to` is the excluded end like every `--to`: the same day twice is an empty
    range, said before anything is fetched or published."""
    from typer.testing import CliRunner

    from tapeflow.cli import app

    res = CliRunner().invoke(
        app,
        [
            "backfill",
            "binance-vision",
            "--symbol",
            "BTCUSDT",
            "--from",
            "2024-01-01",
            "--to",
            "2024-01-01",
            "--dir",
            str(tmp_path),
        ],
        env={"TAPEFLOW_HOME": str(tmp_path / "home")},
    )
    assert res.exit_code == 1
    assert "--from 2024-01-01 is not before --to 2024-01-01 (--to is excluded)" in res.output
