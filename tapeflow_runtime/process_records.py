"""What a running service leaves behind so other processes can find it: its process record.

The supervisor writes one state file per service (`TAPEFLOW_HOME/run/<name>.json`); `status`, `down`
and every service that needs the broker or the database (`endpoints.resolve_*`) read it back. A pid
alone is not an identity (pids are reused), so the record keeps the process start time too and a
process only counts as the same one when both match; anything else is a stale file.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

from tapeflow_runtime.errors import TapeflowError
from tapeflow_runtime.files import atomic_write_text


class StateFileError(TapeflowError):
    """A state file that cannot be read back."""


@dataclass
class ProcessRecord:
    """What `up` writes for each running service; `status`/`down` read it back."""

    name: str
    pid: int
    create_time: float
    address: str
    started_at: float
    log: str
    extra: dict = field(default_factory=dict)

    def save(self, path: Path) -> None:
        atomic_write_text(path, json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, path: Path) -> ProcessRecord | None:
        try:
            return cls(**json.loads(path.read_text()))
        except FileNotFoundError:
            return None
        except (ValueError, TypeError) as exc:
            raise StateFileError(f"state file {path} is corrupt ({exc}); remove it and retry") from None

    def is_alive(self) -> bool:
        return pid_matches(self.pid, self.create_time)


def pid_matches(pid: int, create_time: float) -> bool:
    """True when `pid` is running and is the very process that was started at `create_time`."""
    try:
        proc = psutil.Process(pid)
        return abs(proc.create_time() - create_time) < 1.0 and proc.status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def process_create_time(pid: int) -> float:
    return psutil.Process(pid).create_time()
