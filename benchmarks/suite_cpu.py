"""Where the test suite's CPU goes: CPU seconds per test, the pytest worker's own and its reaped
children's (the services, CLIs and load generators a test starts and waits for).

`make test` is CPU-bound on 2 cores (4 workers; ~34 CPU-min in ~20 min), so its length follows the
CPU the tests burn, not their wall time (a 1x replay waits 4 minutes for almost nothing). Wall-time
durations (`--durations`) cannot tell the two apart; this can.

Run (a pytest plugin, then the report):

    rm -rf /tmp/suite-cpu && TAPEFLOW_SUITE_CPU_DIR=/tmp/suite-cpu \\
        .venv/bin/python -m pytest -n 4 --maxschedchunk 1 -p benchmarks.suite_cpu
    .venv/bin/python -m benchmarks.suite_cpu /tmp/suite-cpu [--top 30]

Children count where they are reaped: a module or session fixture's processes (each worker's broker
and PostgreSQL) in the test whose teardown stops them, the last test of each worker for the
session's: such a row shows far more child CPU than its wall time allows (they are marked `*`).
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ENV = "TAPEFLOW_SUITE_CPU_DIR"


def _cpu() -> tuple[float, float]:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, kids.ru_utime + kids.ru_stime


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    out = os.environ.get(ENV)
    own0, kids0 = _cpu()
    began = time.monotonic()
    yield
    if not out:
        return
    own1, kids1 = _cpu()
    Path(out).mkdir(parents=True, exist_ok=True)
    with open(Path(out) / f"{os.getpid()}.tsv", "a", encoding="utf-8") as f:
        f.write(f"{own1 - own0:.2f}\t{kids1 - kids0:.2f}\t{time.monotonic() - began:.2f}\t{item.nodeid}\n")


def read(directory: Path) -> list[tuple[float, float, float, str]]:
    rows = []
    for path in sorted(directory.glob("*.tsv")):
        for line in path.read_text(encoding="utf-8").splitlines():
            own, kids, wall, nodeid = line.split("\t", 3)
            rows.append((float(own), float(kids), float(wall), nodeid))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", type=Path, help=f"where the plugin wrote ({ENV})")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    rows = read(args.directory)
    if not rows:
        raise SystemExit(f"no measurements in {args.directory}: run pytest with -p benchmarks.suite_cpu and {ENV}")
    own, kids, wall = (sum(r[i] for r in rows) for i in range(3))
    print(
        f"{len(rows)} tests: {own + kids:,.0f} CPU-s in the tests ({own:,.0f} in the pytest workers, {kids:,.0f} in "
        f"their children), {wall:,.0f} s of test wall time"
    )
    print(f"{'CPU-s':>7} {'child':>7} {'wall s':>7}  test")
    cores = os.cpu_count() or 1
    for o, k, w, nodeid in sorted(rows, key=lambda r: -(r[0] + r[1]))[: args.top]:
        reaped = "*" if k > w * cores else " "  # more than the machine could run in its time: fixtures'
        print(f"{o + k:7.1f} {k:7.1f}{reaped}{w:7.1f}  {nodeid}")
    print("* children reaped at the test's teardown include fixtures' processes that ran through earlier tests")


if __name__ == "__main__":
    main()
