"""The suite's slowest tests and how long each took in a recent `make test`: the order `make test` hands
tests to its workers (tests/conftest.py, `pytest_collection_modifyitems`: longest known first).

Why a table: with 4 workers on 2 cores, a 100-s test handed out in the suite's last minute runs alone
after the others finished (the tail of the run). The `timeout` markers rank only the tests that were
given one over the default; the stack lifecycle tests, mypy, the pipeline end to end and the secret
scan (60-100 s each) had none and were handed out among the last 20 % of the suite in file order.

The table (`tests/slow_tests.txt`, one `SECONDS NODEID` a line) is read, never required: a test that
is not in it (new, renamed) keeps the old rank (its timeout, then file order), and a stale line only
changes an order. Refresh it from the `--durations` section of a whole run, say after a test got much
faster or slower:

    make test PYTEST_ARGS=--durations=80 2>&1 | tee /tmp/suite.log
    .venv/bin/python -m tests.support.slow_tests /tmp/suite.log

A test's setup, call and teardown are added up (a module fixture's setup is charged to the first test).
"""

from __future__ import annotations

import re
import sys
from collections import defaultdict
from pathlib import Path

TABLE = Path(__file__).resolve().parent.parent / "slow_tests.txt"
#: a line of pytest's "slowest durations" section
_LINE = re.compile(r"^\s*([\d.]+)s (setup|call|teardown)\s+(\S+)\s*$")
#: tests shorter than this are left out: their order does not make a tail
MIN_SECONDS = 15.0


def known_seconds(table: Path = TABLE) -> dict[str, float]:
    """{nodeid: seconds} from the table; {} when it is missing."""
    try:
        lines = table.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return {}
    out: dict[str, float] = {}
    for line in lines:
        if line.strip() and not line.startswith("#"):
            seconds, nodeid = line.split(None, 1)
            out[nodeid.strip()] = float(seconds)
    return out


def from_log(text: str) -> dict[str, float]:
    """{nodeid: setup + call + teardown seconds} from the `slowest N durations` section of a pytest log."""
    section = text.split("slowest", 1)[1] if "slowest" in text else ""
    total: dict[str, float] = defaultdict(float)
    for line in section.splitlines():
        match = _LINE.match(line)
        if match:
            total[match[3]] += float(match[1])
    return dict(total)


def write(seconds: dict[str, float], table: Path = TABLE) -> int:
    kept = sorted(((s, n) for n, s in seconds.items() if s >= MIN_SECONDS), key=lambda sn: (-sn[0], sn[1]))
    header = "# SECONDS NODEID of the slowest tests of a recent `make test` (tests/support/slow_tests.py)\n"
    table.write_text(header + "".join(f"{s:.0f} {n}\n" for s, n in kept), encoding="utf-8")
    return len(kept)


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    seconds = from_log(Path(sys.argv[1]).read_text(encoding="utf-8", errors="replace"))
    if not seconds:
        print(f"no `slowest durations` section in {sys.argv[1]}: run pytest with --durations=80")
        return 1
    print(f"{write(seconds)} tests of {MIN_SECONDS:.0f} s or more written to {TABLE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
