"""Runnable examples in the docs: how they are found, how they run and how their output is checked
(tests/docs/test_runnable.py, tests/docs/test_readme_walk.py; conventions: docs/development/docs.md).

A fenced ```console block right after the marker `<!-- runnable -->` is runnable; each of its lines starting
with `$ ` is a command, the other lines are example output (not compared). `<!-- not runnable: why -->` marks a
block that is shown only (it needs the internet, a long-running foreground process or a real exchange).
`<!-- runnable: in the background until "TEXT" -->` marks a block of services the reader leaves running in a
terminal of their own: each command starts in the background, the page goes on once its output shows TEXT,
and it is stopped as Ctrl-C would (SIGINT) when the page's last block has run.
The blocks of one file run in order, in one working directory, like a user following the page; a command
`export NAME=VALUE` sets the variable for the page's later commands, as it would in the reader's shell.

A fenced ```text block right after `<!-- expected output -->` is what the reader sees: each line starting with
`$ ` names a command the page runs, the lines under it are that command's output (stdout and stderr as a
terminal interleaves them). `<!-- expected output: NAME -->` holds an output that is not a command's (the
messages a chat received: NAME is given by the page's test). They are compared line for line with what really
came out (`compare`): a line `…` alone stands for any number of lines (none included), and `…` inside a line
for any text on that line; trailing spaces and trailing empty lines do not count.
"""

from __future__ import annotations

import difflib
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
VENV_BIN = Path(sys.executable).parent

_BLOCK = re.compile(
    r"^(?P<marker><!--\s*(?P<kind>runnable|not runnable)(?P<arg>[^>]*)-->\s*\n)?```console\n"
    r"(?P<body>.*?)^```",
    re.M | re.S,
)
_BACKGROUND = re.compile(r'^\s*:\s*in the background until "(?P<until>[^"]+)"\s*$')
_EXPECTED = re.compile(
    r"^<!--\s*expected output(?:\s*:\s*(?P<source>[\w-]+))?\s*-->\s*\n```text\n(?P<body>.*?)^```", re.M | re.S
)
_EXPORT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")

ANY = "…"  # the placeholder of an expected output: a line of its own = any lines; inside a line = any text


@dataclass(frozen=True)
class Block:
    path: Path
    line: int
    runnable: bool
    marked: bool
    commands: tuple[str, ...]
    until: str | None = None  # a background block: the text its output shows once it is ready

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"


def console_blocks(path: Path) -> list[Block]:
    text = path.read_text()
    out = []
    for m in _BLOCK.finditer(text):
        commands = tuple(line[2:].strip() for line in m.group("body").splitlines() if line.startswith("$ "))
        kind = m.group("kind")
        background = _BACKGROUND.match(m.group("arg")) if kind == "runnable" and m.group("arg").strip() else None
        if kind == "runnable" and m.group("arg").strip() and background is None:
            raise ValueError(f"{path}: unknown marker <!-- runnable{m.group('arg')}-->")
        out.append(
            Block(
                path,
                text.count("\n", 0, m.start("body")),
                kind == "runnable",
                kind is not None,
                commands,
                background.group("until") if background else None,
            )
        )
    return out


def runnable_blocks(path: Path) -> list[Block]:
    return [b for b in console_blocks(path) if b.runnable]


def tutorial_pages() -> list[Path]:
    """The pages whose console blocks must all be marked, and whose runnable ones run."""
    return sorted([*(DOCS / "getting-started").glob("*.md"), *(DOCS / "tutorials").glob("*.md")])


# --- expected outputs ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Expected:
    """One expected-output block: (command, its expected lines) per section; `source` for a named output."""

    path: Path
    line: int
    source: str | None
    sections: tuple[tuple[str | None, tuple[str, ...]], ...]

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(REPO) if self.path.is_relative_to(REPO) else self.path}:{self.line}"


def expected_blocks(path: Path, text: str | None = None) -> list[Expected]:
    text = path.read_text() if text is None else text
    out = []
    for m in _EXPECTED.finditer(text):
        sections: list[tuple[str | None, list[str]]] = []
        source = m.group("source")
        for line in m.group("body").splitlines():
            if source is None and line.startswith("$ "):
                sections.append((line[2:].strip(), []))
            elif sections:
                sections[-1][1].append(line)
            else:
                sections.append((None, [line]))  # output before any `$ ` line: an error unless the block is named
        if source is not None and not sections:
            sections.append((None, []))
        out.append(
            Expected(
                path, text.count("\n", 0, m.start("body")), source, tuple((c, tuple(lines)) for c, lines in sections)
            )
        )
    return out


def _lines(text: str) -> list[str]:
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def matches(expected: list[str] | tuple[str, ...], actual: str) -> bool:
    """Whether `actual` is `expected` line for line, `…` standing for what varies (module docstring)."""
    want = _lines("\n".join(expected))
    pattern = "".join(
        r"(?:[^\n]*\n)*?"
        if line.strip() == ANY
        else r"[^\n]*?".join(re.escape(part) for part in line.split(ANY)) + r"\n"
        for line in want
    )
    got = "".join(line + "\n" for line in _lines(actual))
    return re.fullmatch(pattern, got) is not None


def _shown(expected: tuple[str, ...] | list[str], actual: str) -> list[str]:
    """The actual lines for the diff of a mismatch, each line that an expected line with `…` matches shown as
    that line, so the diff points at what really differs."""
    patterns = [line for line in _lines("\n".join(expected)) if ANY in line and line.strip() != ANY]
    return [next((p for p in patterns if matches([p], line)), line) for line in _lines(actual)]


def compare(expected: Expected, outputs: dict[str, list[str]], named: dict[str, str] | None = None) -> list[str]:
    """What differs between an expected-output block and the outputs of the page's run: `outputs` maps a
    command to its outputs in the order it ran, `named` a named output to its text. Empty when all match."""
    problems = []
    taken: dict[str, int] = {}
    for command, lines in expected.sections:
        if expected.source is not None:
            label, actual = f"the output named {expected.source!r}", (named or {}).get(expected.source)
            if actual is None:
                problems.append(f"{expected.where}: the page's test gives no output named {expected.source!r}")
                continue
        elif command is None:
            problems.append(f"{expected.where}: output lines before the first `$ command` line")
            continue
        else:
            runs = outputs.get(command, [])
            k = taken.get(command, 0)
            taken[command] = k + 1
            if k >= len(runs):
                problems.append(f"{expected.where}: `$ {command}` is not a command the page ran (runnable blocks)")
                continue
            label, actual = f"the output of `$ {command}`", runs[k]
        if not matches(lines, actual):
            diff = "\n".join(
                difflib.unified_diff(
                    _lines("\n".join(lines)), _shown(lines, actual), "expected (page)", "actual", lineterm="", n=2
                )
            )
            problems.append(f"{expected.where}: {label} differs from the page (`{ANY}` matches what varies):\n{diff}")
    return problems


# --- running ---------------------------------------------------------------------------------------------
@dataclass
class Result:
    command: str
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    note: str = ""  # why a command that exited 0 still failed (a background service that never got ready)

    @property
    def output(self) -> str:
        """What a terminal shows (with `Session(merge_output=True)` stdout holds both streams, in order)."""
        return self.stdout + self.stderr

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.note


@dataclass
class _Background:
    result: Result
    proc: subprocess.Popen
    log: Path
    started: float


@dataclass
class Session:
    """A fresh working directory (the repository's top-level entries linked in, so `stream_apps/...` and
    `tests/data/...` resolve, while outputs land here) and a fresh TAPEFLOW_HOME, as a new user has.

    `merge_output`: stderr into stdout, unbuffered, so a result's output is what a terminal would show.
    `pinned`: variables a page's test imposes (a local stand-in for a chat, the bundled recording for live
    data); the page's `export` of one of them is skipped. `after`: called after each foreground command."""

    merge_output: bool = False
    pinned: dict[str, str] = field(default_factory=dict)
    after: Callable[[Result], None] | None = None
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
        env.update(
            TAPEFLOW_HOME=str(self.home),
            PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}",
            NO_MKDOCS_2_WARNING="1",
        )
        if self.merge_output:
            env["PYTHONUNBUFFERED"] = "1"
        env.update(self.pinned)
        self.env = env
        self._background: list[_Background] = []

    def _export(self, command: str) -> Result | None:
        """`export NAME=VALUE ...` sets the variables for the later commands (a pinned one is kept)."""
        try:
            words = shlex.split(command, comments=True)
        except ValueError:
            return None
        if len(words) < 2 or words[0] != "export" or not all(_EXPORT.match(w) for w in words[1:]):
            return None
        for word in words[1:]:
            name, value = word.split("=", 1)
            if name not in self.pinned:
                self.env[name] = value
        result = Result(command, 0, "", "", 0.0)
        self.results.append(result)
        return result

    def run(self, command: str, timeout: float = 300) -> Result:
        exported = self._export(command)
        if exported is not None:
            return exported
        start = time.monotonic()
        proc = subprocess.Popen(
            ["bash", "-o", "pipefail", "-c", command],
            cwd=self.work,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if self.merge_output else subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            err = (err or "") + f"\n(timed out after {timeout:.0f} s)"
        result = Result(command, proc.returncode, out, err or "", time.monotonic() - start)
        self.results.append(result)
        if self.after is not None:
            self.after(result)
        return result

    def start_background(self, command: str, until: str, timeout: float = 90) -> Result:
        """Start a service as the reader would in another terminal; return once its output shows `until`."""
        log = self.root / f"background-{len(self._background)}.log"
        with log.open("wb") as sink:
            proc = subprocess.Popen(
                ["bash", "-o", "pipefail", "-c", command],
                cwd=self.work,
                env=self.env,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        started = time.monotonic()
        result = Result(command, 0, "", "", 0.0)
        self.results.append(result)
        self._background.append(_Background(result, proc, log, started))
        while until not in log.read_text(errors="replace"):
            if proc.poll() is not None:
                result.note = f"ended (exit {proc.returncode}) before its output showed {until!r}"
                break
            if time.monotonic() - started > timeout:
                result.note = f"its output did not show {until!r} within {timeout:.0f} s"
                break
            time.sleep(0.1)
        if result.note:
            self.stop_background()
        return result

    def stop_background(self, timeout: float = 20) -> None:
        """Stop the background services as Ctrl-C would (SIGINT; SIGKILL after `timeout`), newest first."""
        while self._background:
            bg = self._background.pop()
            if bg.proc.poll() is None:
                os.killpg(bg.proc.pid, signal.SIGINT)
                try:
                    bg.proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    os.killpg(bg.proc.pid, signal.SIGKILL)
                    bg.proc.wait()
                    bg.result.note = bg.result.note or f"did not stop within {timeout:.0f} s of SIGINT"
            bg.result.returncode = bg.proc.returncode
            bg.result.stdout = bg.log.read_text(errors="replace")
            bg.result.seconds = time.monotonic() - bg.started

    def run_blocks(self, blocks: list[Block]) -> list[Result]:
        """Every command of the blocks in order; stops at the first that fails (returns what ran). The
        background services are stopped at the end, so their output is complete."""
        try:
            for block in blocks:
                for command in block.commands:
                    result = (
                        self.start_background(command, block.until) if block.until is not None else self.run(command)
                    )
                    if not result.ok:
                        return self.results
            return self.results
        finally:
            self.stop_background()

    def outputs(self) -> dict[str, list[str]]:
        """Each command's outputs, in the order it ran (for `compare`)."""
        out: dict[str, list[str]] = {}
        for r in self.results:
            out.setdefault(r.command, []).append(r.output)
        return out

    def close(self) -> None:
        """Never leave a service or a stack behind, whatever the commands did."""
        self.stop_background()
        if (self.home / "run").exists():
            self.run("tapeflow down", timeout=120)
        shutil.rmtree(self.root, ignore_errors=True)

    def report(self) -> str:
        return "\n".join(
            f"$ {r.command}  -> exit {r.returncode} in {r.seconds:.1f} s{f' ({r.note})' if r.note else ''}\n"
            f"{r.stdout[-2000:]}{r.stderr[-2000:]}"
            for r in self.results
        )


README_BLOCKS = runnable_blocks(REPO / "README.md")
