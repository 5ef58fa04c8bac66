"""The producer's checkpoint: the last delivered agg id per symbol, in a small JSON file.

A restarted producer resumes each symbol's chain from it, so it fills the hole its own downtime left
(`producers.binance.trade_repairs`). The file is rewritten only after a new delivery, and a save that
fails (a full disk) is said once, in the log and the producer's status, without stopping the producer:
the data is in Kafka, only a restart would resume from an older point.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import structlog

from producers.base.venue import ProducerStatus
from tapeflow_runtime.files import atomic_write_text

log = structlog.get_logger("producer.binance")


class AggIdCheckpoint:
    """Reads and writes one checkpoint file (`path` None: no checkpoint)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._error: str | None = None  # why the last save failed (disk full...)
        self._saved: dict[str, int] | None = None  # what the file holds since the last save

    def load(self) -> dict[str, Any]:
        """symbol -> last delivered agg id, as saved (empty without a readable file)."""
        path = self.path
        if path is None or not path.exists():
            return {}
        try:
            saved = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable checkpoint", path=str(path), error=str(exc))
            return {}
        return saved.get("last_agg_id", {})

    def save(self, delivered: dict[str, int], status: ProducerStatus) -> None:
        """Write `delivered` if it changed since the last save (or the last save failed); a failure is
        added to `status`'s detail until a save succeeds again."""
        path = self.path
        if path is None or not delivered:
            return
        if self._error is None and self._saved == delivered:
            return  # nothing delivered since: an idle producer wrote the same file every second
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, json.dumps({"last_agg_id": delivered, "saved_at": time.time()}))
            self._saved = dict(delivered)
        except OSError as exc:  # a full disk, say: keep producing (the data is in Kafka), say it once
            self._failed(path, exc, status)
            return
        if self._error is not None:
            log.info("checkpoint saved again", path=str(path))
            status.set(status.state, status.detail.replace(f"; {self._error}", "").replace(self._error, ""))
            self._error = None

    def _failed(self, path: Path, exc: OSError, status: ProducerStatus) -> None:
        if self._error is None:
            log.error(
                "checkpoint not saved: a restart would resume from the last one saved",
                path=str(path),
                error=str(exc),
            )
        self._error = f"checkpoint not saved: {exc.strerror or exc}"
        if self._error not in status.detail:
            status.set(status.state, f"{status.detail}; {self._error}".lstrip("; "))
