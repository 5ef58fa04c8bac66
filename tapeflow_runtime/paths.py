"""Where a stack keeps its state: everything lives under `TAPEFLOW_HOME`.

Two stacks with different homes (and ports) never share a file, which is what lets tests and users
run several side by side.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class StackPaths:
    home: Path

    @property
    def run_dir(self) -> Path:
        """Pid/state files of running components and the supervisor lock."""
        return self.home / "run"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def secrets_dir(self) -> Path:
        """Generated credentials of the embedded database (mode 0700, files 0600)."""
        return self.home / "secrets"

    @property
    def postgres_dir(self) -> Path:
        return self.home / "postgres"

    @property
    def bin_dir(self) -> Path:
        return self.home / "bin"

    @property
    def supervisor_lock(self) -> Path:
        return self.run_dir / "supervisor.lock"

    def state_file(self, component: str) -> Path:
        return self.run_dir / f"{component}.json"

    def log_file(self, component: str) -> Path:
        return self.logs_dir / f"{component}.log"

    def ensure(self) -> None:
        for d in (self.run_dir, self.logs_dir, self.bin_dir):
            d.mkdir(parents=True, exist_ok=True)
        self.secrets_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.secrets_dir.chmod(0o700)
