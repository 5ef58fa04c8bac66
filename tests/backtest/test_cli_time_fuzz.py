"""`tapeflow backtest --from/--to` at their edge (backtest/cli.py `parse_time`).

Why: the backtest CLI turns `CliError` into "error: ..." and an exit code; anything else raised is a
traceback. So any text is Unix milliseconds or a one-line `CliError` naming the option and the
text; a date is that day's midnight UTC, and as an end (`--to`) the midnight after it.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from hypothesis import example, given
from hypothesis import strategies as st

from backtest.cli import CliError, parse_time
from tests.support.fuzz import FUZZ, outcome

texts = st.one_of(st.text(max_size=30), st.dates().map(date.isoformat), st.datetimes().map(datetime.isoformat),
                  st.sampled_from(["9999-12-31", "0001-01-01", "2024-02-30", "2024-01-01T25:00", "1704067200000"]))


@FUZZ
@given(text=texts, end=st.booleans())
# found by this property: the end of 9999-12-31 is past datetime's range (OverflowError escaped)
@example(text="9999-12-31", end=True)
def test_any_text_is_a_time_or_a_one_line_cli_error(text, end):
    ms, err = outcome(parse_time, text, "--to" if end else "--from", end=end, errors=CliError)
    if err is not None:
        assert str(err).startswith("--to " if end else "--from ") and repr(text.strip()) in str(err)
    else:
        assert isinstance(ms, int)


@FUZZ
@given(day=st.dates(min_value=date(1970, 1, 1), max_value=date(9999, 12, 30)), end=st.booleans())
def test_a_date_is_its_midnight_or_the_next_one_as_an_end(day, end):
    midnight = datetime(day.year, day.month, day.day, tzinfo=UTC) + (timedelta(days=1) if end else timedelta())
    assert parse_time(day.isoformat(), "--from", end=end) == int(midnight.timestamp() * 1000)
