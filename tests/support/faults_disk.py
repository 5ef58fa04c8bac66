"""Disk-full faults for the fault suite: a small tmpfs the test mounts (root only; the
callers skip elsewhere, with the reason) and fills to its last byte.

- `small_tmpfs`, `fill`: the helpers (tests/faults/test_disk_full.py uses them for ``TAPEFLOW_HOME``).
- `database_disk_full`: one live stack (`tests.support.endurance.live_stack`) whose PostgreSQL cluster
  (``<home>/postgres``) lives on a tmpfs; while trades flow the tmpfs is filled, held full for
  ``full_s``, then the filler is deleted. PostgreSQL fails the sink's writes (``could not extend
  file``, SQLSTATE 53100) or, when the WAL cannot grow, PANICs and its postmaster restarts or dies;
  the sink must say so and retry the batch, the supervisor restart the database if it died, and
  once the space is back every trade the exchange played must be in the trades table exactly once.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.support.faults_process import UNTOUCHED, _statuses, row, session_played
from tests.support.waiting import poll


class NoMount(Exception):
    """A tmpfs cannot be mounted here (not root, no mount permission): the reason."""


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str = "64k", mode: str = "0700") -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode={mode}", "tmpfs", str(path)], capture_output=True, text=True
    )
    if done.returncode != 0:
        raise NoMount(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(path: Path) -> Path:
    """Fill the filesystem up to its last byte."""
    filler = path / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 20, 4096, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * size)
    finally:
        os.close(fd)
    return filler


#: how long the disk may stay full waiting for the sink to say so: it says so at its first write that
#: fails, 0.7 s after the fill at load 13, 11.1 s once on CI. (A session dated before a slow stack was up
#: came all at once, after the producer's anchor gave up waiting (`SyntheticExchange`), and could be
#: stored whole before the fill: no write left to fail within the old 24-s cap.)
SINK_SAYS_S = 60.0


def database_disk_full(
    home: Path,
    *,
    full_s: float = 10.0,
    size: str = "384m",
    duration_s: float = 50.0,
    trades_per_s: float = 40.0,
    symbol: str = "BTCUSDT",
) -> list[dict[str, Any]]:
    """The row ``database_disk_full_<S>s``: ``duration_s`` how long the disk was full; ``recover_s``
    from the space freed to the table caught up with what the producer had delivered. The detail has
    the sink's and the database's status while full (``status_full``: the first not-ok status seen, and
    when), the sink's log lines about it, the database's restarts, and the whole run's accounting."""
    from tests.support.endurance import live_stack
    from tests.support.faults_links import _accounting, _delivered, _flowing, _max_stored, _session, _wait_all_stored

    spec, expected = _session(duration_s, trades_per_s, symbol)
    count, first, last = expected
    detail: dict[str, Any] = {"expected": expected}
    watched = ("database", "sink")
    with (
        small_tmpfs(home / "postgres", size=size, mode="0755") as pgdir,
        # trades flow from the stack's start, not before; labels, guardrail and ui are not in the sink's path
        live_stack(home, spec, dated_at_launch=True, without=UNTOUCHED) as stack,
    ):
        _flowing(stack, symbol)
        db_pid = stack.service_pid("database")
        detail["session_at_fill"] = session_played(stack)
        t0 = time.monotonic()
        filler = fill(pgdir)
        detail["filler_bytes"] = filler.stat().st_size
        seen: dict[str, tuple[float, str]] = {}
        try:
            # full for ``full_s``, longer until the sink has said so (its first write that needs a new page
            # fails; the trades flow on, so one comes). The database is recorded if it says so, not waited
            # for: its status (a connection and a query) stays healthy on a full disk unless PostgreSQL
            # PANICs, so waiting for it held every run full for the whole cap (3x ``full_s``)
            while (asked := time.monotonic()) - t0 < full_s or ("sink" not in seen and asked - t0 < SINK_SAYS_S):
                # the time the status was asked, while the disk was full: under load the answer can
                # take long enough to arrive after the filler is gone (CI-like run: 8.23 s of 8)
                for name, (ok, text) in _statuses(stack, watched).items():
                    if not ok and name not in seen:
                        seen[name] = (round(asked - t0, 2), text)
                time.sleep(0.25)
        finally:
            filler.unlink()
        t_free = time.monotonic()
        detail["status_full"] = seen

        def caught_up():
            try:
                return _max_stored(stack, symbol) >= min(_delivered(stack, symbol) or 0, last)
            except Exception:  # noqa: BLE001 - the database may still be restarting
                return False

        recovered = poll(caught_up, 120, 0.2)
        recover_s = round(time.monotonic() - t_free, 2) if recovered else None
        detail["database_restarted"] = stack.service_pid("database") != db_pid
        _wait_all_stored(stack, symbol, count, last, duration_s + 120)
        detail["status_after"] = poll(
            lambda: (st := _statuses(stack, watched)) and all(ok for ok, _ in st.values()) and st, 30, 0.25
        ) or _statuses(stack, watched)
        detail.update(_accounting(stack, symbol, count, first, last))
        logs = stack.sup.paths.home / "logs"
        sink_log = (logs / "sink.log").read_text(errors="replace")
        detail["sink_full_lines"] = [
            ln for ln in sink_log.splitlines() if "No space left" in ln or "could not extend" in ln
        ][:5]
        detail["sink_retries"] = sink_log.count("database unavailable")
        detail["log"] = list(stack.log)
    return [
        row(
            f"database_disk_full_{full_s:g}s",
            duration_s=round(t_free - t0, 2),
            trades_in=count,
            trades_out=detail["distinct"],
            duplicates=detail["dupes"],
            lost=detail["missing"],
            recover_s=recover_s,
            detail=detail,
        )
    ]
