"""Historical market data: replay exchange archives into the same topics the live producers fill.

`binance_vision.run_backfill` is the entry point of `tapeflow backfill binance-vision`: daily
aggTrades archives from data.binance.vision (downloaded, checksum-verified and cached, or read from a
local directory) are parsed as a stream, put in agg-id order with gaps and duplicates accounted for,
and published to `md.trades` (or a named replay topic) with a checkpoint that makes re-runs resume.
"""

from producers.backfill.binance_vision import DEFAULT_BASE_URL, run_backfill
from producers.backfill.errors import BackfillError, ChecksumMismatchError
from producers.backfill.summary import BackfillSummary, format_summary

__all__ = [
    "DEFAULT_BASE_URL",
    "BackfillError",
    "BackfillSummary",
    "ChecksumMismatchError",
    "format_summary",
    "run_backfill",
]
