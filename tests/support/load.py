"""A deliberately loaded machine for tests that claim "the same output whatever the timing".

`cpu_hog()` keeps every core busy for the duration of a `with` block (inside the parallel suite, where
the other workers load the cores already, it adds one busy process at nice 19: it takes the CPU the
other workers leave idle and almost none they want, so the block still never runs on an idle core
and the suite's other tests are not slowed; at nice 0 the test that uses it measured 490 CPU-s in the
suite, hog included): Debian's
`stress-ng` where it is installed (`--cpu N`, what a user would reach for), otherwise N busy Python
processes. Either way the
hog processes are children of the test, started in their own process group (not their own session)
and killed on exit, even when the block raises.

Why not their own session: with the kernel's autogroup scheduling (`kernel.sched_autogroup_enabled`,
on by default on Debian and most desktops) every session is its own scheduling group, the groups
share the CPU equally and a process's nice counts only inside its group. A nice-19 hog in a new
session took a core's share from the whole suite (pinned to one core beside a busy process of the
test's session: 3.75 CPU-s of 6 s, the busy process 0.72); in the test's session it takes 0.02 s,
the busy process 1.52 (2026-11-26, `kernel.sched_autogroup_enabled = 1`). Tests must not assert on
timing under it: the hog exists to shake out output that depends on it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator

_BUSY = "import os\nos.nice(0)\nwhile True:\n    pass\n"


def _in_suite() -> bool:
    return bool(os.environ.get("PYTEST_XDIST_WORKER"))


def default_hog_workers() -> int:
    """One busy process per core; inside the parallel suite (pytest-xdist) one, as the suite's other
    workers already keep every core busy (load average 4-8 on 2 cores during `make test`): a hog per
    core there only took CPU from the other workers' tests and lengthened the suite."""
    if _in_suite():
        return 1
    return os.cpu_count() or 2


@contextlib.contextmanager
def cpu_hog(workers: int | None = None) -> Iterator[list[int]]:
    """Busy-loop `workers` processes (default: `default_hog_workers()`) for the block; yields their pids."""
    n = workers or default_hog_workers()
    stress = shutil.which("stress-ng")
    nice = 19 if _in_suite() else 0
    opts = dict(
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        process_group=0,  # the test's session
        preexec_fn=(lambda: os.nice(nice)) if nice else None,
    )
    if stress:
        procs = [subprocess.Popen([stress, "--cpu", str(n), "--cpu-method", "matrixprod", "--quiet"], **opts)]
    else:
        procs = [subprocess.Popen([sys.executable, "-c", _BUSY], **opts) for _ in range(n)]
    try:
        yield [p.pid for p in procs]
    finally:
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait(10)
