"""`--help` says what the code does: `up` names every component it starts, `engine` what orders a replay's
inputs. Both texts once drifted from the code (up listed five of its nine components; engine said
250 ms x speed of lateness while up used 1 s x speed; replays now need none: progress markers)."""

from __future__ import annotations

import subprocess
import sys

from tapeflow.stack.app_services import EngineService
from tapeflow.stack.supervisor import default_services, default_steps
from tapeflow_runtime.paths import StackPaths
from tapeflow_runtime.settings import Settings
from tests.support.paths import RECORDING

# how the help text names a component (service or step name -> words)
SPOKEN = {
    "database": "PostgreSQL",
    "fake-exchange": "fake exchange",
    "executor": "paper executor",
    "engine": "signal engine",
    "ui": "web UI",
    "labels": "outcome labels writer",
    "guardrail": "canary guardrail controller",
}


def help_text(*args: str) -> str:
    res = subprocess.run(
        [sys.executable, "-m", "tapeflow", *args, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"COLUMNS": "400", "PATH": "/usr/bin:/bin", "TERM": "dumb"},
    )
    assert res.returncode == 0, res.stderr
    return " ".join(res.stdout.split())


def test_up_help_names_every_component_up_starts(tmp_path):
    settings = Settings(home=tmp_path, source=f"replay:{RECORDING}")  # a replay adds the fake exchange
    paths = StackPaths(tmp_path)
    names = [s.name for s in default_services(settings, paths)] + [s.name for s in default_steps(settings, paths)]
    assert {
        "broker",
        "database",
        "migrations",
        "topics",
        "sink",
        "engine",
        "executor",
        "labels",
        "guardrail",
        "producer",
        "fake-exchange",
        "ui",
    } == set(names)
    text = help_text("up")
    for name in names:
        assert SPOKEN.get(name, name) in text, f"`up --help` does not mention {name}: {text}"


def test_engine_help_says_replays_are_ordered_by_progress_markers_not_lateness(tmp_path):
    text = help_text("engine")
    assert "Replays need none: their progress markers order the inputs." in text, text
    assert "--wait-for-progress" in text and "Default: on for a replay:DIR source" in text, text
    # and `up` really starts a replay's engine without a lateness allowance
    settings = Settings(home=tmp_path, source=f"replay:{RECORDING}")
    argv = EngineService(settings, StackPaths(tmp_path)).prepare().argv
    assert "--allowed-lateness-ms" not in argv, argv


def test_produce_help_names_every_exchange_it_accepts(tmp_path):
    """`produce --help` lists the venues `--exchange` takes, and an unknown one is refused with that list."""
    text = help_text("produce")
    for venue in ("binance", "bybit", "okx"):
        assert venue in text.split("--exchange", 1)[1].split("--", 1)[0], text
    assert "--okx-ws-url" in text and "--okx-rest-url" in text and "BTC-USDT-SWAP" in text, text
    res = subprocess.run(
        [sys.executable, "-m", "tapeflow", "produce", "--exchange", "kraken"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "TAPEFLOW_HOME": str(tmp_path)},
    )
    assert res.returncode == 2 and "expected binance, bybit or okx" in res.stdout + res.stderr, res


def _commands(command, path=()):
    """Every command of the CLI with its path (Typer's vendored click: a group is what has commands)."""
    yield list(path), command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _commands(sub, (*path, name))


def test_help_paragraphs_are_wrapped_by_the_terminal_not_by_the_source():
    """Docstrings are wrapped at ~100 columns in the source; `--help` must not keep those breaks, or a
    wider terminal shows ragged half lines (and a narrower one, lines broken twice). On a 1000-column
    terminal each paragraph of every command's description is one line."""
    import typer
    from typer.testing import CliRunner

    from tapeflow.cli import app

    runner = CliRunner()
    commands = list(_commands(typer.main.get_command(app)))
    assert len(commands) > 30  # the subcommands were walked too
    ragged = []
    for path, _ in commands:
        res = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "1000", "TERM": "dumb"})
        assert res.exit_code == 0, (path, res.output)
        lines = [ln.strip() for ln in res.output.split("╭─")[0].splitlines() if not ln.strip().startswith("Usage:")]
        ragged += [(" ".join(path), a[:60]) for a, b in zip(lines, lines[1:]) if a and b]
    assert ragged == []
