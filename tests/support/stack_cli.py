"""`tapeflow` against a TAPEFLOW_HOME as a user runs it (offline: the bundled recording through the fake
exchange), and a cheap way to wait on the stack it started.

Why the in-process status: each `tapeflow status` process costs ~1.5 CPU-s (a fresh interpreter importing
the CLI), and the stack tests asked it every 1-2 s while they waited for a stack to become healthy or a
replay to finish (a dozen times per wait under load). `status_report` calls the function the command
runs (`tapeflow.stack.supervisor.stack_status`) with the settings the command would load from the same
environment, so it reports exactly what the command prints with `--json`; the tests still run the real
command for what they assert about it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar
from unittest import mock

from tests.support.cli_fork import tapeflow_forked
from tests.support.paths import RECORDING

T = TypeVar("T")


def stack_env(home: Path, env_extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a `tapeflow` command against `home`: none of the caller's TAPEFLOW_* settings,
    market data from the bundled recording at full speed (offline, as on our machines)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAPEFLOW_")}
    env.update(
        {
            "TAPEFLOW_HOME": str(home),
            "TAPEFLOW_SOURCE": f"replay:{RECORDING}",
            "TAPEFLOW_REPLAY_SPEED": "max",
            **(env_extra or {}),
        }
    )
    return env


def cli(home: Path, *args: str, env_extra: dict[str, str] | None = None, timeout: float = 120):
    """`tapeflow ARGS` in `home`'s parent directory, its output captured. `up` runs as `python -m tapeflow`
    (every stack of these tests is started by the real command, and the stack's own processes are started
    by it as `python -m tapeflow` whatever runs `up`); every other command by this worker's fork server
    (tests/support/cli_fork.py: the same entry point with exactly this environment, in a process forked
    from one that has imported the CLI; `status`, `db audit`, `down`, ... cost 0.2-0.4 CPU-s of imports
    each as a process of their own, a `backtest` ~1)."""
    env = stack_env(home, env_extra)
    if args and args[0] != "up":
        preload = ("backtest.runner",) if args[0] == "backtest" else ()
        return tapeflow_forked(*args, env=env, cwd=home.parent, timeout=timeout, preload=preload)
    return subprocess.run(
        [sys.executable, "-m", "tapeflow", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        cwd=home.parent,
    )


def status_report(home: Path, env_extra: dict[str, str] | None = None, names: tuple[str, ...] | None = None) -> dict:
    """What `tapeflow status --json` prints (healthy, components; without the config), computed in this
    process from the same environment (no .env file is read: the command runs in `home`'s parent, which
    has none, and the environment here is the command's, not the test process's). ``names``: of those
    components only (`healthy`: all of them are), each as in the whole report; a whole status costs ~120 ms
    of CPU in this process and the stack's, a wait that polls it every 0.5 s a quarter of a core."""
    from tapeflow.stack.supervisor import stack_status
    from tapeflow_runtime.paths import StackPaths
    from tapeflow_runtime.settings import load_settings

    with mock.patch.dict(os.environ, stack_env(home, env_extra), clear=True):
        settings = load_settings()
    components = stack_status(settings, StackPaths(settings.home), names=names)
    return {"healthy": all(c.healthy for c in components), "components": [c.as_dict() for c in components]}


def components(
    home: Path, env_extra: dict[str, str] | None = None, names: tuple[str, ...] | None = None
) -> dict[str, dict]:
    """`status_report`'s components (``names``: of those only) by name."""
    return {c["name"]: c for c in status_report(home, env_extra, names)["components"]}


def stored_trades(home: Path, symbol: str) -> int:
    """The rows of `symbol` in the stack's trades table, asked as the database's owner: a cheap poll
    while the sink catches up (`tapeflow db audit`, a process, is then asked once)."""
    import json

    import psycopg

    host, port = json.loads((home / "run" / "database.json").read_text())["address"].rsplit(":", 1)
    password = (home / "secrets" / "postgres-postgres").read_text().strip()
    info = psycopg.conninfo.make_conninfo(host=host, port=port, user="postgres", dbname="tapeflow", password=password)
    with psycopg.connect(info) as conn:
        row = conn.execute("SELECT count(*) FROM trades WHERE symbol = %s", (symbol,)).fetchone()
    return int(row[0]) if row else 0


def wait_for(probe: Callable[[], T | None], timeout_s: float, what: str, every_s: float = 0.5) -> T:
    """`probe()`'s first true value, asked every `every_s` until `timeout_s`; fails saying `what` did not happen."""
    deadline = time.monotonic() + timeout_s
    while True:
        got = probe()
        if got:
            return got
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} within {timeout_s:.0f} s")
        time.sleep(every_s)
