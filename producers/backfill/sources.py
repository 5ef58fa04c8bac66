"""Where a day's archive comes from: a local directory, or data.binance.vision through a verified cache.

A source answers "the file for (symbol, day)" or None when there is none (HTTP 404, no file in the
directory): a missing day is reported and the run goes on. A download is accepted only when its
SHA-256 matches the `.CHECKSUM` published next to it; the zip is streamed to a `.part` file and
renamed into the cache only after that check, so the cache never holds an unverified archive, and a
cached archive is verified again before each use (a damaged one is fetched anew).

HTTP is plain urllib: one sequential GET per file, so an async client would buy nothing here, and
urllib streams the body in chunks (a BTCUSDT day is ~50-150 MB zipped) without extra dependencies.
Transient failures (connection errors, timeouts, 429, 5xx, a body cut short) are retried with
exponential backoff; other HTTP errors stop the run with the URL in the message.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Protocol

import structlog

from producers.backfill.errors import BackfillError, ChecksumMismatchError
from producers.backfill.vision_files import (
    CHECKSUM_SUFFIX,
    archive_stem,
    archive_url,
    parse_checksum,
    verify_checksum,
)
from tapeflow_runtime.files import atomic_write_text

log = structlog.get_logger("producer.backfill")

_CHUNK = 1 << 20


@dataclass(frozen=True)
class DayArchive:
    """The file holding one day of aggTrades: a Binance zip, or the CSV extracted from one."""

    day: date
    path: Path
    origin: str  # "directory" | "cache" | "download"


class ArchiveSource(Protocol):
    def fetch(self, symbol: str, day: date) -> DayArchive | None:
        """The archive of `symbol` on `day`, or None when none exists."""
        ...

    def where(self, symbol: str, day: date) -> str:
        """Where the archive was looked for (for the missing-day report)."""
        ...


class LocalDirectory:
    """Archives already on disk, named like the official ones (`<stem>.zip` or `<stem>.csv`).

    A zip with a `<stem>.zip.CHECKSUM` beside it is verified like a download.
    """

    def __init__(self, directory: Path) -> None:
        if not directory.is_dir():
            raise BackfillError(f"--dir {directory}: not a directory")
        self.directory = directory

    def fetch(self, symbol: str, day: date) -> DayArchive | None:
        stem = archive_stem(symbol, day)
        zip_path = self.directory / f"{stem}.zip"
        if zip_path.is_file():
            checksum = zip_path.with_name(zip_path.name + CHECKSUM_SUFFIX)
            if checksum.is_file():
                verify_checksum(zip_path, parse_checksum(checksum.read_text(), zip_path.name))
            return DayArchive(day, zip_path, "directory")
        csv_path = self.directory / f"{stem}.csv"
        if csv_path.is_file():
            return DayArchive(day, csv_path, "directory")
        return None

    def where(self, symbol: str, day: date) -> str:
        return str(self.directory / f"{archive_stem(symbol, day)}.{{zip,csv}}")


class VisionDownloader:
    """Downloads from data.binance.vision (or a mirror at `base_url`) into `cache_dir/<SYMBOL>/`."""

    def __init__(
        self,
        base_url: str,
        cache_dir: Path,
        *,
        timeout: float = 60.0,
        attempts: int = 4,
        backoff_s: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.cache_dir = cache_dir
        self.timeout = timeout
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.sleep = sleep

    def where(self, symbol: str, day: date) -> str:
        return archive_url(self.base_url, symbol, day)

    def fetch(self, symbol: str, day: date) -> DayArchive | None:
        url = archive_url(self.base_url, symbol, day)
        got = self.fetch_url(url, self.cache_dir / symbol / f"{archive_stem(symbol, day)}.zip")
        return DayArchive(day, got[0], got[1]) if got is not None else None

    def fetch_url(self, url: str, target: Path) -> tuple[Path, str] | None:
        """Any archive published with a `.CHECKSUM` beside it (aggTrades, metrics, klines...), cached at
        `target`: (path, "cache" | "download"), or None when the server has no such file."""
        checksum_file = target.with_name(target.name + CHECKSUM_SUFFIX)
        if target.is_file() and checksum_file.is_file():
            try:
                verify_checksum(target, parse_checksum(checksum_file.read_text(), target.name))
                return target, "cache"
            except BackfillError as exc:
                log.warning("cached archive failed verification, downloading again", file=str(target), error=str(exc))
        checksum_text = self._get_text(url + CHECKSUM_SUFFIX)
        if checksum_text is None:
            return None
        expected = parse_checksum(checksum_text, target.name)
        target.parent.mkdir(parents=True, exist_ok=True)
        part = target.with_name(target.name + ".part")
        actual = self._download(url, part)
        if actual is None:
            return None
        if actual != expected:
            part.unlink(missing_ok=True)
            raise ChecksumMismatchError(
                f"{target.name}: downloaded SHA-256 {actual} does not match its "
                f"{CHECKSUM_SUFFIX} ({expected}); from {url}"
            )
        os.replace(part, target)
        atomic_write_text(checksum_file, checksum_text)
        return target, "download"

    # --- HTTP -----------------------------------------------------------------------------------
    def _get_text(self, url: str) -> str | None:
        def read(resp) -> str:
            return resp.read(1 << 16).decode("utf-8", errors="replace")

        return self._with_retries(url, read)

    def _download(self, url: str, dest: Path) -> str | None:
        """Stream `url` to `dest`; its SHA-256, or None on 404."""

        def stream(resp) -> str:
            h = hashlib.sha256()
            with open(dest, "wb") as out:
                while block := resp.read(_CHUNK):
                    h.update(block)
                    out.write(block)
            return h.hexdigest()

        return self._with_retries(url, stream)

    def _with_retries(self, url: str, consume: Callable) -> str | None:
        error = ""
        for attempt in range(self.attempts):
            try:
                request = urllib.request.Request(url, headers={"User-Agent": "tapeflow-backfill"})
                with urllib.request.urlopen(request, timeout=self.timeout) as resp:  # nosec B310 # the configured Vision base URL (https by default; file: only if the operator sets it)
                    return consume(resp)
            except urllib.error.HTTPError as exc:
                if exc.code == 404:
                    return None
                if exc.code != 429 and exc.code < 500:
                    raise BackfillError(f"GET {url}: HTTP {exc.code} {exc.reason}") from None
                error = f"HTTP {exc.code} {exc.reason}"
            except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException) as exc:
                error = f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
            if attempt + 1 < self.attempts:
                delay = self.backoff_s * 2**attempt
                log.warning("download failed, retrying", url=url, error=error, retry_in_s=delay)
                self.sleep(delay)
        raise BackfillError(f"GET {url} failed after {self.attempts} attempts: {error}")
