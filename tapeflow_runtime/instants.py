"""When a range starts and ends, one reading for every command's `--from` and `--to`.

The rule the CLI states in every help: `--from` is included and `--to` excluded; a date is its
midnight UTC (so `--to 2024-02-01` ends with the last moment of January); a date-time is UTC unless
it carries an offset; plain digits are Unix milliseconds. Each command once read its range with a
parser of its own, and they disagreed (one took Unix milliseconds, one only dates, one included the
`--to` day); every command now reads through this module and only turns the `ValueError` into its
own error type.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
EXPECTED = (
    "expected a date (2024-01-01), a date-time (2024-01-01T12:00, UTC unless it says otherwise) or Unix milliseconds"
)
_ONE_MS = timedelta(milliseconds=1)


def parse_moment(text: str, option: str) -> datetime:
    """The timezone-aware moment ``text`` names. Raises ValueError naming ``option`` and the text."""
    value = str(text).strip()
    if value.isascii() and value.isdigit():
        try:  # integer arithmetic: a float division put some milliseconds a microsecond early
            return EPOCH + timedelta(milliseconds=int(value))
        except OverflowError:
            raise ValueError(f"{option} {text!r}: Unix milliseconds past the year 9999") from None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{option} {text!r}: {EXPECTED}") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def parse_ms(text: str, option: str) -> int:
    """Unix milliseconds of :func:`parse_moment` (exact: sub-millisecond parts are cut, never rounded)."""
    return (parse_moment(text, option) - EPOCH) // _ONE_MS


def parse_date(text: str, option: str) -> date:
    """A whole UTC day, for commands whose unit is a day (a backfill downloads daily archives): a
    date, or a time at midnight UTC; any other time is refused rather than silently cut."""
    try:
        moment = parse_moment(text, option).astimezone(UTC)
    except OverflowError:  # an offset that moves the moment out of years 1-9999
        raise ValueError(f"{option} {text!r}: outside the years 1-9999 in UTC") from None
    if moment.timetz().replace(tzinfo=None) != datetime.min.time():
        raise ValueError(f"{option} {text!r}: this command works in whole UTC days; give a date such as 2024-01-31")
    return moment.date()
