"""The arguments of a backfill: an inclusive range of UTC days and an exchange symbol, validated.

Binance's archives are cut per UTC day, so a day is the unit of download, checkpoint and progress.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import date, timedelta

from producers.backfill.errors import BackfillError
from tapeflow_runtime.instants import parse_date

_SYMBOL_RE = re.compile(r"^[A-Z0-9]{2,32}$")


def parse_day(text: str, what: str = "date") -> date:
    """`2024-01-31` -> date, read as every command reads a date (tapeflow_runtime.instants); a time
    other than midnight UTC, or anything else, is a BackfillError that quotes the input."""
    try:
        return parse_date(text, what)
    except (ValueError, AttributeError) as exc:
        raise BackfillError(str(exc)) from None


def day_range(start: date, end: date) -> list[date]:
    """Every day from `start` to `end`, both included; start after end is an error."""
    if start > end:
        raise BackfillError(f"--from {start.isoformat()} is after --to {end.isoformat()}")
    return list(_days(start, end))


def _days(start: date, end: date) -> Iterator[date]:
    day = start
    while day <= end:
        yield day
        day += timedelta(days=1)


def normalise_symbol(symbol: str) -> str:
    """Upper-case exchange symbol as the archive names it (`btcusdt` -> `BTCUSDT`)."""
    sym = symbol.strip().upper()
    if not _SYMBOL_RE.match(sym):
        raise BackfillError(f"symbol {symbol!r} is not a Binance symbol: expected letters and digits, e.g. BTCUSDT")
    return sym
