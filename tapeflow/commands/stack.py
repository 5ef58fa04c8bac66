"""The stack: `up`, `down`, `status`, `logs`, `version` and the options every command takes."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import orjson
import typer

from tapeflow import __version__
from tapeflow.commands._common import (
    app,
    echo,
    fail,
    state,
    use_namespace,
)


@app.callback()
def main_options(
    config: Path | None = typer.Option(
        None,
        "--config",
        "-c",
        help="YAML settings file (same keys as the TAPEFLOW_* variables, lower case).",
        envvar="TAPEFLOW_CONFIG",
        show_envvar=True,
    ),
) -> None:
    """Settings come from TAPEFLOW_* environment variables, a .env file and an optional YAML file."""
    state.config_file = config
    state._settings = None


@app.command()
def up(
    detach: bool = typer.Option(False, "--detach", "-d", help="Run in the background and return once healthy."),
    source: str | None = typer.Option(
        None,
        "--source",
        help="Market data: `live` (Binance) or `replay:DIR` (a recording, offline). Default: TAPEFLOW_SOURCE or live.",
    ),
    replay_speed: str | None = typer.Option(
        None, "--replay-speed", help="With replay: 1x, 10x, ... or max (the x is optional)."
    ),
    input_prefix: str | None = typer.Option(
        None,
        "--input-prefix",
        help="Rehearsal: run sink, engine and executor on the namespace NAME that "
        "`tapeflow replay --to-prefix NAME` fills (no producer; point TAPEFLOW_BROKER at the broker holding it).",
    ),
    only: str | None = typer.Option(
        None,
        "--only",
        help="Start only these services (comma-separated names as `tapeflow status` shows them, e.g. "
        "`sink,producer`); the broker, the database, migrations and topics always run, and a replay's producer "
        "brings its fake-exchange. Default: every service.",
    ),
) -> None:
    """Start the stack and supervise it: broker, PostgreSQL, migrations, topics, then the sink, the signal
    engine, the paper executor, the outcome labels writer and the canary guardrail controller (and the cross-venue watchlist when
    TAPEFLOW_WATCHLIST=true), then the producer (with --source replay:DIR, a local fake exchange replaying the recording feeds it), then the
    web UI (`tapeflow ui`; its login URL, with the token, is printed). A crashed service is restarted with
    backoff."""
    from sinks.retention import resolve_policies
    from tapeflow.stack.supervisor import parse_only, run_foreground, start_detached

    state.overrides.update({k: v for k, v in (("source", source), ("replay_speed", replay_speed)) if v})
    state._settings = None
    use_namespace(input_prefix)
    settings, paths = state.settings(), state.paths()
    resolve_policies(settings.retention)  # a retention typo fails here, in one line, before anything starts
    runner = start_detached if detach else run_foreground
    raise typer.Exit(runner(settings, paths, echo, only=parse_only(only)))


@app.command()
def down() -> None:
    """Stop everything `up` started in this TAPEFLOW_HOME (SIGTERM, then SIGKILL after a timeout)."""
    from tapeflow.stack.supervisor import stop_stack

    raise typer.Exit(stop_stack(state.settings(), state.paths(), echo))


@app.command()
def status(json_out: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Health, address, pid and uptime of each component; exit code 0 only when all are healthy."""
    from tapeflow.stack.supervisor import stack_status

    settings = state.settings()
    components = stack_status(settings, state.paths())
    healthy = all(c.healthy for c in components)
    if json_out:
        typer.echo(
            orjson.dumps(
                {"healthy": healthy, "components": [c.as_dict() for c in components], "config": settings.masked()},
                option=orjson.OPT_INDENT_2,
            ).decode()
        )
    else:
        echo(f"{'COMPONENT':<15}{'HEALTH':<8}{'STATE':<10}{'ADDRESS':<22}{'PID':<8}{'UPTIME':<9}DETAIL")
        for c in components:
            echo(
                f"{c.name:<15}{'ok' if c.healthy else 'FAIL':<8}{c.state:<10}{c.address or '-':<22}"
                f"{c.pid or '-':<8}{_fmt_uptime(c.uptime_s):<9}{c.detail}"
            )
        echo("")
        echo("config (secrets masked):")
        for k, v in settings.masked().items():
            echo(f"  {k}: {v}")
    raise typer.Exit(0 if healthy else 1)


def _fmt_uptime(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


@app.command()
def logs(
    component: str | None = typer.Argument(None, help="supervisor, broker, database, ... (default: all)."),
    lines: int = typer.Option(40, "--lines", "-n", min=0, help="How many trailing lines per log."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new lines (Ctrl-C to stop)."),
) -> None:
    """Show the logs of the stack's components (files under TAPEFLOW_HOME/logs)."""
    logs_dir = state.paths().logs_dir
    files = sorted(logs_dir.glob("*.log")) if logs_dir.exists() else []
    if component:
        files = [f for f in files if f.stem == component]
        if not files:
            known = ", ".join(f.stem for f in sorted(logs_dir.glob("*.log"))) if logs_dir.exists() else "none"
            raise fail(f"no log for {component!r} in {logs_dir} (available: {known or 'none'})")
    if not files:
        raise fail(f"no logs in {logs_dir}: has `tapeflow up` run with this TAPEFLOW_HOME?")
    offsets = {}
    for f in files:
        content = f.read_bytes().decode(errors="replace").splitlines()
        prefix = f"[{f.stem}] " if len(files) > 1 else ""
        for line in content[-lines:] if lines else []:
            echo(prefix + line)
        offsets[f] = f.stat().st_size
    while follow:
        time.sleep(0.5)
        for f in files:
            size = f.stat().st_size
            if size > offsets[f]:
                with open(f, "rb") as fh:
                    fh.seek(offsets[f])
                    chunk = fh.read().decode(errors="replace")
                offsets[f] = size
                prefix = f"[{f.stem}] " if len(files) > 1 else ""
                for line in chunk.splitlines():
                    echo(prefix + line)


@app.command()
def version() -> None:
    """Print the tapeflow version."""
    echo(f"tapeflow {__version__} (Python {sys.version.split()[0]})")
