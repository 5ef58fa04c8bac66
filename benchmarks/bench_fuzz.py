"""Every fuzz property of the suite (tests/**/test_*_fuzz.py) with many examples each, as a table.

CI runs the same properties with ``TAPEFLOW_FUZZ_EXAMPLES`` unset (200 each, tests/support/fuzz.py);
this sets it to ``--examples`` (default 10,000) before pytest starts, runs the files in this process
(one core, no xdist, the per-test timeout off) and prints, per property: the parser it holds to its
edge, the examples hypothesis ran (passing + failing before shrinking, from its own statistics),
whether it failed, the seconds and the examples per second. Exit code 1 when any property failed (its falsifying example
is in pytest's output above the table: keep it as an ``@example`` once the parser is fixed).

    .venv/bin/python -m benchmarks.bench_fuzz [--examples 10000] [-k EXPR]
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FILES = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").rglob("test_*_fuzz.py") if "faults" not in p.parts)
_PHASES = re.compile(r"during (\w+) phase.*?(\d+) passing, (\d+) failing", re.S)


class _Recorder:
    """pytest plugin: per test, its outcome, call duration and hypothesis's statistics text."""

    def __init__(self) -> None:
        self.rows: dict[str, dict] = {}

    def pytest_runtest_logreport(self, report) -> None:
        from _hypothesis_pytestplugin import STATS_KEY  # hypothesis's plugin puts them on the teardown report

        row = self.rows.setdefault(report.nodeid, {"seconds": 0.0, "failed": False, "stats": ""})
        if report.when == "call":
            row["seconds"] = report.duration
        if report.when == "teardown":
            row["stats"] = report.__dict__.get(STATS_KEY, "")
        row["failed"] = row["failed"] or report.failed


def _parser(nodeid: str) -> str:
    """`tests/producers/binance/test_frames_fuzz.py::test_x` -> `producers/binance frames: test_x`."""
    path, _, test = nodeid.partition("::")
    where = str(Path(path).parent.relative_to("tests")) if Path(path).parent != Path("tests") else ""
    stem = Path(path).stem.removeprefix("test_").removesuffix("_fuzz")
    return f"{where} {stem}: {test.removeprefix('test_')}".strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=10_000, help="examples per property (default 10,000)")
    parser.add_argument("-k", default=None, help="pytest -k expression: only matching properties")
    args = parser.parse_args()
    os.environ["TAPEFLOW_FUZZ_EXAMPLES"] = str(args.examples)  # read by tests/support/fuzz.py at import
    os.chdir(ROOT)

    import pytest

    recorder = _Recorder()
    pytest_args = [
        *FILES,
        "-p",
        "no:randomly",
        "-p",
        "no:cacheprovider",
        "-q",
        "-o",
        "timeout=0",
        "--hypothesis-show-statistics",
        "-o",
        "addopts=",
    ]
    if args.k:
        pytest_args += ["-k", args.k]
    started = time.perf_counter()
    code = pytest.main(pytest_args, plugins=[recorder])
    wall = time.perf_counter() - started

    print(
        f"\nfuzz properties, {args.examples:,} examples asked per property, one process "
        f"({os.cpu_count()} CPUs on this machine)"
    )
    header = f"{'parser: property':<92} {'examples':>9} {'failures':>8} {'seconds':>8} {'examples/s':>10}"
    print(header)
    print("-" * len(header))
    total_examples = total_failures = 0
    total_seconds = 0.0
    for nodeid, row in recorder.rows.items():
        # examples tried before any shrinking (explicit, reuse and generate phases); a failed property
        # counts one failure, however many inputs its shrinking then tried
        run = sum(int(p) + int(f) for phase, p, f in _PHASES.findall(row["stats"]) if phase != "shrink")
        failures = 1 if row["failed"] else 0
        rate = run / row["seconds"] if row["seconds"] > 0 and run else 0.0
        total_examples, total_failures, total_seconds = (
            total_examples + run,
            total_failures + failures,
            total_seconds + row["seconds"],
        )
        shown = f"{run:>9,}" if row["stats"] else f"{'plain':>9}"  # a plain test beside the properties
        print(f"{_parser(nodeid):<92} {shown} {failures:>8} {row['seconds']:>8.1f} {rate:>10,.0f}")
    print("-" * len(header))
    print(
        f"{'total (' + str(len(recorder.rows)) + ' properties)':<92} {total_examples:>9,} {total_failures:>8} "
        f"{total_seconds:>8.1f} {total_examples / max(total_seconds, 1e-9):>10,.0f}"
    )
    print(f"wall time {wall:.0f} s; pytest exit code {int(code)}")
    return 0 if int(code) == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
