"""data.binance.vision naming and integrity: where a day's aggTrades archive lives and how to verify it.

Layout (USD-M futures):
    <base>/data/futures/um/daily/aggTrades/<SYMBOL>/<SYMBOL>-aggTrades-<YYYY-MM-DD>.zip
    ... .zip.CHECKSUM   one line: "<sha256 hex>  <zip file name>" (sha256sum's format)
Local directories use the same file names (the zip, or the CSV extracted from it).
"""

from __future__ import annotations

import hashlib
import re
from datetime import date
from pathlib import Path

from producers.backfill.errors import BackfillError, ChecksumMismatchError

DEFAULT_BASE_URL = "https://data.binance.vision"
CHECKSUM_SUFFIX = ".CHECKSUM"
_SHA256_RE = re.compile(r"^[0-9a-fA-F]{64}$")


def archive_stem(symbol: str, day: date) -> str:
    """`BTCUSDT-aggTrades-2024-01-01` (the zip and the CSV inside it share this stem)."""
    return f"{symbol}-aggTrades-{day.isoformat()}"


def archive_url(base_url: str, symbol: str, day: date) -> str:
    return f"{base_url.rstrip('/')}/data/futures/um/daily/aggTrades/{symbol}/{archive_stem(symbol, day)}.zip"


def parse_checksum(text: str, expected_name: str) -> str:
    """The SHA-256 hex digest in a `.CHECKSUM` file for `expected_name` (lower case)."""
    parts = text.split()
    if len(parts) < 1 or not _SHA256_RE.match(parts[0]):
        raise BackfillError(f"{expected_name}{CHECKSUM_SUFFIX}: expected '<sha256>  <file name>', got {text[:120]!r}")
    if len(parts) >= 2 and parts[1].lstrip("*") != expected_name:
        raise BackfillError(f"{expected_name}{CHECKSUM_SUFFIX} names {parts[1]!r}, not {expected_name!r}")
    return parts[0].lower()


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def verify_checksum(path: Path, expected_sha256: str) -> None:
    """ChecksumMismatchError naming `path` unless its SHA-256 is `expected_sha256`."""
    actual = sha256_file(path)
    if actual != expected_sha256:
        raise ChecksumMismatchError(
            f"{path.name}: SHA-256 {actual} does not match its {CHECKSUM_SUFFIX} "
            f"({expected_sha256}); the file is corrupt or was altered ({path})"
        )
