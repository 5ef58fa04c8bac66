"""The whole CPU of one test run alone: its pytest process and every process it started, the session's
broker and PostgreSQL included, with a breakdown by command.

`benchmarks/suite_cpu.py` measures every test of a suite run, but a test's services that outlive it and
the session fixtures' processes (each worker's broker and PostgreSQL) are reaped at another test's
teardown, so a stack test's own broker load is not in its row. Here the test runs in a pytest of its
own under a child subreaper (`PR_SET_CHILD_SUBREAPER`): every descendant, also one that daemonized or
whose parent did not wait for it, is reaped by this process, so `RUSAGE_CHILDREN` is everything the
test cost. The breakdown samples each descendant's CPU every 0.5 s (a process shorter than that is
missing from the breakdown, never from the total). The fixed cost of a pytest session that starts a
broker and PostgreSQL is in the total: compare a test with itself, before and after a change.

On a machine shared with others, CPU seconds are the comparable figure, not wall time; they still
grow with the load (services polling at a fixed interval poll longer), so give the load with them.

    .venv/bin/python -m benchmarks.cpu_alone tests/test_replay_parity.py::test_a_one_hour_replay_at_max_equals_the_engine_core_and_loses_no_frame
"""

from __future__ import annotations

import collections
import ctypes
import os
import resource
import subprocess
import sys
import threading
import time

import psutil

PR_SET_CHILD_SUBREAPER = 36


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        print(__doc__)
        return 2
    if ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise SystemExit("prctl(PR_SET_CHILD_SUBREAPER) failed: descendants would escape the measurement")
    began = time.monotonic()
    load0 = os.getloadavg()[0]
    pytest = subprocess.Popen([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *sys.argv[1:]])
    seen: dict[tuple[int, float], list] = {}
    done = threading.Event()

    def sample() -> None:
        me = psutil.Process()
        while not done.is_set():
            for child in me.children(recursive=True):
                try:
                    with child.oneshot():
                        key = (child.pid, child.create_time())
                        if key not in seen:
                            seen[key] = [child.cmdline(), 0.0]
                        cpu = child.cpu_times()
                        seen[key][1] = cpu.user + cpu.system
                except psutil.Error:
                    pass
            done.wait(0.5)

    threading.Thread(target=sample, daemon=True).start()
    code = None
    while True:
        try:
            pid, status = os.wait()  # pytest and every orphan this subreaper inherits
        except ChildProcessError:
            break
        if pid == pytest.pid:
            code = os.waitstatus_to_exitcode(status)
    done.set()
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    groups: dict[str, list] = collections.defaultdict(lambda: [0.0, 0])
    for cmdline, cpu in seen.values():
        words = [os.path.basename(w) if i == 0 else w for i, w in enumerate(cmdline)]
        if "-m" in words:  # python -m tapeflow engine ... / python -m pytest ...
            at = words.index("-m")
            label = " ".join(words[at + 1 : at + 3] if words[at + 1] == "tapeflow" else words[at + 1 : at + 2])
        else:
            label = " ".join(words[:2])
        groups[label[:60]][0] += cpu
        groups[label[:60]][1] += 1
    for label, (cpu, n) in sorted(groups.items(), key=lambda item: -item[1][0]):
        if cpu >= 0.5:
            print(f"{cpu:8.1f} CPU-s {n:3d}x {label}")
    total = usage.ru_utime + usage.ru_stime
    print(
        f"total {total:.1f} CPU-s (user {usage.ru_utime:.1f}, system {usage.ru_stime:.1f}), "
        f"{time.monotonic() - began:.0f} s wall, load {load0:.1f} -> {os.getloadavg()[0]:.1f}, pytest exit {code}"
    )
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
