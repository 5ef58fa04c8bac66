"""Strategy files: `strategy list` (the shipped ones), `strategy new` (a new file from one of them) and
`strategy check` (validate files and show the hash the engine will stamp on their signals).

A new strategy starts as a copy of a shipped one, not as a blank form: every key then has a value the
engine has run with, and the first backtest of the copy reproduces its base exactly (only the name,
the version and the description differ, and those are part of the hash, so the copy's signals are
told apart from its base's)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import typer

from tapeflow.commands._common import app, echo, fail

strategy_app = typer.Typer(
    help="Strategy files: list the shipped ones, start a new one, check files.", no_args_is_help=True
)
app.add_typer(strategy_app, name="strategy")

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,47}$")


def _shipped() -> dict[str, Path]:
    from stream_apps.core.strategy import default_strategy_dir

    return {p.stem: p for p in sorted(default_strategy_dir().glob("*.yaml"))}


def _base_file(base: str) -> Path:
    shipped = _shipped()
    if base in shipped:
        return shipped[base]
    path = Path(base)
    if path.is_file():
        return path
    raise fail(f"--from {base!r}: not a shipped strategy ({', '.join(sorted(shipped))}) nor a file", 2)


def new_strategy_text(base_text: str, base_label: str, base_ref: str, name: str, version: str, description: str) -> str:
    """``base_text`` (a strategy file) as a new strategy: its own header, name, version and description;
    every other line (values and the comments beside them) as the base has it."""
    body = base_text.split("\n")
    while body and (body[0].startswith("#") or not body[0].strip()):
        body.pop(0)  # the base's header speaks of the base
    # the base's name, version and description go, with any continuation lines of a long value
    # (those are indented; nothing nests under these three keys), and the new ones take their place
    mine = [f"name: {name}", f"version: {json.dumps(version)}", f"description: {json.dumps(description)}"]
    kept: list[str] = []
    at, skipping = None, False
    for line in body:
        if re.match(r"^(name|version|description):", line):
            at = len(kept) if at is None else at
            skipping = True
            continue
        if skipping and line[:1].isspace():
            continue
        skipping = False
        kept.append(line)
    at = 0 if at is None else at
    text = "\n".join(kept[:at] + mine + kept[at:])
    day = datetime.now(UTC).date().isoformat()
    header = (
        f"# {name}: started with `tapeflow strategy new` from {base_label} on {day}.\n"
        "# Every key, its unit and its effect: docs/reference/strategy.md (or the schema in any error\n"
        "# message); how the engine scores, gates and exits: docs/concepts/signals.md.\n"
        "# Check it: tapeflow strategy check THIS_FILE; backtest it beside its base:\n"
        f"#   tapeflow backtest --strategy THIS_FILE --strategy {base_ref}\n"
    )
    return header + text.rstrip("\n") + "\n"


@strategy_app.command("list")
def strategy_list() -> None:
    """The shipped strategies: name, version, config hash and what each is."""
    from stream_apps.core.strategy import load_strategy

    for path in _shipped().values():
        cfg = load_strategy(path)
        echo(f"{cfg.name:<16} {cfg.version:<10} {cfg.config_hash[:12]}  {cfg.description}")


@strategy_app.command("new")
def strategy_new(
    name: str = typer.Argument(..., help="The new strategy's name: lower case letters, digits and _, 48 at most."),
    base: str = typer.Option("v53", "--from", help="Start from this shipped strategy (name or file stem) or file."),
    out: Path | None = typer.Option(None, "--out", help="Where to write it. Default: ./NAME.yaml."),
    version: str = typer.Option("0.1.0", "--version", help="Its version label (carried on every signal)."),
    force: bool = typer.Option(False, "--force", help="Overwrite the file if it exists."),
) -> None:
    """Write a new strategy file: a copy of a shipped strategy with its own name, version and
    description, validated before it is written. Edit it, then `strategy check` and `backtest` it."""
    from stream_apps.core.strategy import StrategyConfigError, default_strategy_dir, parse_strategy, read_strategy_file

    if not _NAME.match(name):
        raise fail(f"{name!r} is not a strategy name: lower case letters, digits and _, starting with a letter", 2)
    source = _base_file(base)
    path = out or Path(f"{name}.yaml")
    if path.exists() and not force:
        raise fail(f"{path} exists (--force overwrites it)", 2)
    import yaml

    data = read_strategy_file(source)
    base_cfg = parse_strategy(data, str(source))
    base_text = source.read_text(encoding="utf-8")
    if source.suffix.lower() == ".json":  # written out as YAML, the format a person edits
        base_text = yaml.safe_dump(data, sort_keys=False)
    text = new_strategy_text(
        base_text,
        f"{base_cfg.name} {base_cfg.version}",
        source.stem if source.parent == default_strategy_dir() else str(source.resolve()),
        name,
        version,
        f"from {base_cfg.name} {base_cfg.version}",
    )
    try:
        cfg = parse_strategy(yaml.safe_load(text), str(path))
    except StrategyConfigError as exc:  # a base file this cannot copy faithfully: nothing is written
        raise fail(f"the copy of {source} does not validate: {exc}", 1) from None
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    echo(f"wrote {path}: {cfg.name} {cfg.version} (config hash {cfg.config_hash[:12]}), from {source.name}")
    echo(f"next: tapeflow strategy check {path} && tapeflow backtest --strategy {path} --source synthetic")


@strategy_app.command("check")
def strategy_check(
    files: list[Path] = typer.Argument(..., help="Strategy files (YAML or JSON)."),
) -> None:
    """Validate strategy files as the engine will: each valid file with its name, version and config
    hash; each invalid one with the engine's one-line reason. Exits 2 when any is invalid."""
    from stream_apps.core.strategy import load_strategy
    from tapeflow_runtime.errors import TapeflowError

    bad = 0
    for path in files:
        try:
            cfg = load_strategy(path)
        except TapeflowError as exc:
            bad += 1
            typer.echo(f"error: {exc}", err=True)
            continue
        echo(f"{path}: ok, {cfg.name} {cfg.version}, config hash {cfg.config_hash}")
    if bad:
        raise typer.Exit(2)
