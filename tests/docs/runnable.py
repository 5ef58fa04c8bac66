"""Runnable examples in the docs: how they are found and how they run (tests/docs/test_runnable.py,
tests/docs/test_readme_walk.py).

A fenced ```console block right after the marker `<!-- runnable -->` is runnable; each of its lines starting
with `$ ` is a command, the other lines are example output (not compared). `<!-- not runnable: why -->` marks a
block that is shown only (it needs the internet, a long-running foreground process or a real exchange).
The blocks of one file run in order, in one working directory, like a user following the page.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
VENV_BIN = Path(sys.executable).parent

_BLOCK = re.compile(r"^(?P<marker><!--\s*(?P<kind>runnable|not runnable)[^>]*-->\s*\n)?```console\n(?P<body>.*?)^```",
                    re.M | re.S)


@dataclass(frozen=True)
class Block:
    path: Path
    line: int
    runnable: bool
    marked: bool
    commands: tuple[str, ...]

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"


def console_blocks(path: Path) -> list[Block]:
    text = path.read_text()
    out = []
    for m in _BLOCK.finditer(text):
        commands = tuple(line[2:].strip() for line in m.group("body").splitlines() if line.startswith("$ "))
        kind = m.group("kind")
        out.append(Block(path, text.count("\n", 0, m.start("body")), kind == "runnable", kind is not None, commands))
    return out


def runnable_blocks(path: Path) -> list[Block]:
    return [b for b in console_blocks(path) if b.runnable]


def tutorial_pages() -> list[Path]:
    """The pages whose console blocks must all be marked, and whose runnable ones run."""
    return sorted([*(DOCS / "getting-started").glob("*.md"), *(DOCS / "tutorials").glob("*.md")])


@dataclass
class Result:
    command: str
    returncode: int
    stdout: str
    stderr: str
    seconds: float


@dataclass
class Session:
    """A fresh working directory (the repository's top-level entries linked in, so `stream_apps/...` and
    `tests/data/...` resolve, while outputs land here) and a fresh TAPEFLOW_HOME, as a new user has."""

    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="tapeflow-docs-")))
    results: list[Result] = field(default_factory=list)

    def __post_init__(self) -> None:
        # TAPEFLOW_HOME outside pytest's basetemp: pytest resets /tmp/pytest-of-<user> to mode 0700 when another
        # pytest starts, and the unprivileged PostgreSQL user (when run as root) then loses its data directory
        self.work = self.root / "work"
        self.home = self.root / "home"
        self.work.mkdir()
        for entry in REPO.iterdir():
            if entry.name not in (".git", ".venv", "site") and not entry.name.startswith(".pytest"):
                (self.work / entry.name).symlink_to(entry)
        env = {k: v for k, v in os.environ.items() if not k.startswith("TAPEFLOW_")}
        env.update(TAPEFLOW_HOME=str(self.home), PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}",
                   NO_MKDOCS_2_WARNING="1")
        self.env = env

    def run(self, command: str, timeout: float = 300) -> Result:
        start = time.monotonic()
        proc = subprocess.Popen(["bash", "-o", "pipefail", "-c", command], cwd=self.work, env=self.env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            err += f"\n(timed out after {timeout:.0f} s)"
        result = Result(command, proc.returncode, out, err, time.monotonic() - start)
        self.results.append(result)
        return result

    def run_blocks(self, blocks: list[Block]) -> list[Result]:
        """Every command of the blocks in order; stops at the first that fails (returns what ran)."""
        for block in blocks:
            for command in block.commands:
                if self.run(command).returncode != 0:
                    return self.results
        return self.results

    def close(self) -> None:
        """Never leave a stack behind, whatever the commands did."""
        if (self.home / "run").exists():
            self.run("tapeflow down", timeout=120)
        shutil.rmtree(self.root, ignore_errors=True)

    def report(self) -> str:
        return "\n".join(f"$ {r.command}  -> exit {r.returncode} in {r.seconds:.1f} s\n{r.stdout[-2000:]}{r.stderr[-2000:]}"
                         for r in self.results)


README_BLOCKS = runnable_blocks(REPO / "README.md")
