"""The one reading of `--from`/`--to` (tapeflow_runtime.instants), at its edges."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from tapeflow_runtime.instants import parse_date, parse_moment, parse_ms


def test_a_date_a_time_an_offset_and_milliseconds():
    assert parse_moment("2024-02-01", "--to") == datetime(2024, 2, 1, tzinfo=UTC)
    assert parse_moment(" 2024-02-01T12:30 ", "--to") == datetime(2024, 2, 1, 12, 30, tzinfo=UTC)
    assert parse_ms("2024-02-01T02:00+02:00", "--from") == parse_ms("2024-02-01", "--from") == 1_706_745_600_000
    assert parse_ms("1706745600000", "--from") == 1_706_745_600_000
    assert parse_ms("2024-02-01T00:00:00.0009", "--from") == 1_706_745_600_000  # cut, never rounded up
    assert parse_ms("1969-12-31T23:59:59.9995", "--from") == -1  # before 1970: cut toward the past too


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("yesterday", "expected a date (2024-01-01), a date-time"),
        ("2024-02-30", "expected a date"),
        ("1e12", "expected a date"),
        ("-1", "expected a date"),  # digits only: a sign is not Unix milliseconds
        ("²", "expected a date"),  # str.isdigit() holds for it, int() does not
        ("99999999999999999999", "Unix milliseconds past the year 9999"),
    ],
)
def test_anything_else_is_one_value_error_naming_the_option_and_the_text(text, says):
    with pytest.raises(ValueError) as err:
        parse_ms(text, "--to")
    assert str(err.value).startswith(f"--to {text!r}: ") and says in str(err.value)


def test_a_day_is_a_date_or_its_midnight_and_never_a_cut_time():
    assert parse_date("2024-01-31", "--to") == parse_date("2024-01-31T00:00Z", "--to") == date(2024, 1, 31)
    assert parse_date("2024-01-31T02:00+02:00", "--to") == date(2024, 1, 31)  # midnight UTC, said otherwise
    assert parse_date("1706659200000", "--to") == date(2024, 1, 31)
    with pytest.raises(ValueError, match="whole UTC days"):
        parse_date("2024-01-31T00:00+01:00", "--to")  # 23:00 UTC the day before
    with pytest.raises(ValueError, match="outside the years 1-9999"):
        parse_date("0001-01-01T00:00+14:00", "--from")
