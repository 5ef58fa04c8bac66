"""The reference pages are generated from the code: regenerated here, they must equal what is committed."""

from __future__ import annotations

import importlib.util
import re
import sys

from tests.docs.runnable import DOCS, REPO

_spec = importlib.util.spec_from_file_location("gen_reference", DOCS / "gen_reference.py")
gen_reference = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("gen_reference", gen_reference)
_spec.loader.exec_module(gen_reference)


def test_committed_reference_equals_what_the_code_generates(tmp_path):
    written = gen_reference.generate(tmp_path)
    stale = [p.name for p in written if p.read_text() != (DOCS / "reference" / p.name).read_text()]
    assert stale == [], f"run `.venv/bin/python docs/gen_reference.py` and commit docs/reference/ ({stale})"
    # every reference page is generated: by gen_reference.py, or dashboards.md by deploy/grafana/dashboards.py
    committed = {p.name for p in (DOCS / "reference").glob("*.md")}
    assert committed == {p.name for p in written} | {"dashboards.md"}


def test_the_reference_covers_what_the_code_declares():
    """Spot checks that the generators walk everything, not just the first of each kind."""
    from schemas.catalogue import all_topics
    from tapeflow_runtime.settings import Settings

    ref = DOCS / "reference"
    topics = (ref / "topics.md").read_text()
    assert all(f"### {t.name}\n" in topics for t in all_topics())
    settings = (ref / "settings.md").read_text()
    assert all(f"`TAPEFLOW_{name.upper()}`" in settings for name in Settings.model_fields)
    cli = (ref / "cli.md").read_text()
    for command in (
        "tapeflow up",
        "tapeflow topics tail",
        "tapeflow research walk-forward",
        "tapeflow watchlist backtest",
        "tapeflow db retention",
        "tapeflow backfill binance-vision",
    ):
        assert f"## `{command}`" in cli, command
    tables = (ref / "tables.md").read_text()
    for table in ("trades", "features", "signals", "positions", "backtest_runs", "xv_pair_events", "pipeline_errors"):
        assert f"\n## {table}\n" in tables, table
    metrics = (ref / "metrics.md").read_text()
    alerts = (REPO / "deploy" / "prometheus" / "alerts.yml").read_text()
    assert all(f"`{name}`" in metrics for name in re.findall(r"- alert: (\w+)", alerts))
    assert (
        "`tapeflow_sink_rows_written_total`" in metrics and "`tapeflow_executor_publish_messages_out_total`" in metrics
    )
    strategy = (ref / "strategy.md").read_text()
    assert "### `Regime`" in strategy and "`WatchlistStrategy` (top level)" in strategy


def test_runtime_code_never_imports_the_docs_tooling():
    """docs/ is tooling for writers and tests: no shipped package imports the generator or mkdocs."""
    import ast

    offenders = []
    for package in gen_reference.RUNTIME_PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                names = (
                    [a.name for a in node.names]
                    if isinstance(node, ast.Import)
                    else [node.module or ""]
                    if isinstance(node, ast.ImportFrom)
                    else []
                )
                if any(n.split(".")[0] in ("gen_reference", "docs", "mkdocs", "material") for n in names):
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert offenders == []


def test_the_cli_reference_lists_the_commands_in_the_order_of_help():
    """A reader who found a command in `tapeflow --help` finds it at the same place in the reference."""
    import subprocess

    shown = subprocess.run(
        [sys.executable, "-m", "tapeflow", "--help"],
        capture_output=True,
        text=True,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
        check=True,
    ).stdout
    in_help = [m.group(1) for m in re.finditer(r"^│ ([a-z][a-z-]+)\s", shown, re.M)]
    page = (DOCS / "reference" / "cli.md").read_text()
    in_page = [m.group(1) for m in re.finditer(r"^## `tapeflow ([a-z-]+)`$", page, re.M)]
    assert len(in_help) >= 20 and in_page == in_help
