"""`tapeflow backtest --from/--to` at their edge (backtest/cli.py `parse_time`).

Why: the backtest CLI turns `CliError` into "error: ..." and an exit code; anything else raised is a
traceback. So any text is Unix milliseconds or a one-line `CliError` naming the option and the
text; a date is that day's midnight UTC, and as an end (`--to`) the midnight after it.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

from hypothesis import example, given
from hypothesis import strategies as st

from backtest.cli import CliError, parse_time
from tests.support.fuzz import FUZZ, outcome

texts = st.one_of(
    st.text(max_size=30),
    st.dates().map(date.isoformat),
    st.datetimes().map(datetime.isoformat),
    st.sampled_from(["9999-12-31", "0001-01-01", "2024-02-30", "2024-01-01T25:00", "1704067200000"]),
)


@FUZZ
@given(text=texts, flag=st.sampled_from(["--from", "--to"]))
@example(text="9999-12-31", flag="--to")  # once an end meant the next midnight, past datetime's range
def test_any_text_is_a_time_or_a_one_line_cli_error(text, flag):
    ms, err = outcome(parse_time, text, flag, errors=CliError)
    if err is not None:
        assert str(err).startswith(f"{flag} ") and repr(text) in str(err)
    else:
        assert isinstance(ms, int)


@FUZZ
@given(day=st.dates(min_value=date(1970, 1, 1), max_value=date(9999, 12, 31)))
def test_a_date_is_its_midnight(day):
    """For `--from` and `--to` alike (a `--to` is excluded, as every `--to` of the CLI)."""
    midnight = datetime(day.year, day.month, day.day, tzinfo=UTC)
    assert parse_time(day.isoformat(), "--to") == int(midnight.timestamp() * 1000)
