"""Comments state invariants and reasons; history lives in docs/changelog.md and figures in
benchmarks/RESULTS.md. A comment or docstring that cites the tracker by number tells the next
reader where a change came from, not why the code is as it is, and means nothing outside our tracker."""

from __future__ import annotations

import re
import subprocess

from tests.support.paths import REPO

CITATION = re.compile(r"\b[Ii]ssue \d+")


def test_no_code_cites_an_issue_number():
    files = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "*.py", "*.sh", "*.toml", "*.yml", "*.yaml", "Makefile"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    assert len(files) > 300  # the repository's code was listed
    found = [
        f"{name}:{n}: {line.strip()[:100]}"
        for name in files
        for n, line in enumerate((REPO / name).read_text(encoding="utf-8", errors="replace").splitlines(), 1)
        if CITATION.search(line)
    ]
    assert found == []
