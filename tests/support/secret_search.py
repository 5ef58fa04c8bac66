"""No secret in any log line, status output, metric, file or database row of a running stack (security).

The stack runs an offline replay with marker secrets in its environment (``MARKERS``: exchange keys, a
notifier token) beside the database passwords it generates itself; then everything it wrote is searched
for every one of them: `tapeflow status` (text and JSON), `tapeflow logs` of every component, every
service's /metrics and /health and every row of every table while it runs (`said_and_stored`), then,
once it is down, every file under TAPEFLOW_HOME except the secrets directory (logs, run records, Kafka's
log, PostgreSQL's data directory and its log: `assert_nothing_written`).

Run inside tests/tapeflow/stack/test_stack_lifecycle.py's whole-stack test, on its stack: the search
only reads, and a stack of its own cost ~20 CPU-s and a minute of a worker.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable
from pathlib import Path

import psycopg
from psycopg import sql

MARKERS = {
    "TAPEFLOW_BINANCE_API_KEY": "mrkKEY7f3a9c1e5b",
    "TAPEFLOW_BINANCE_API_SECRET": "mrkSECRET2d8e4b6a0c",
    "TAPEFLOW_TELEGRAM_BOT_TOKEN": "mrkTOKEN9b1f7d3e5a",
}


def said_and_stored(home: Path, cli: Callable) -> tuple[dict[str, str], dict[str, str]]:
    """(every secret by label: the markers and the generated ones, what the stack said by where) of a
    running stack whose replay has finished, after searching every row of every table for each secret.
    ``cli(home, *args, env_extra=...)`` runs a `tapeflow` command."""
    secrets = {f.name: f.read_text().strip() for f in (home / "secrets").iterdir()}
    assert any(name.startswith("postgres-") for name in secrets)
    markers = {**MARKERS, **{f"generated {name}": value for name, value in secrets.items() if len(value) >= 8}}

    said = {
        "status": cli(home, "status", env_extra=MARKERS).stdout,
        "status --json": cli(home, "status", "--json", env_extra=MARKERS).stdout,
    }
    assert "present" in said["status"] or "***" in said["status"] or "config (secrets masked)" in said["status"]
    records = {f.stem: json.loads(f.read_text()) for f in (home / "run").glob("*.json")}
    for name in records:
        said[f"logs {name}"] = cli(home, "logs", name, "-n", "100000", env_extra=MARKERS).stdout
    served = 0
    for name, record in records.items():
        address = record.get("extra", {}).get("metrics_address") or record.get("address")
        for path in ("/metrics", "/health"):
            try:
                with urllib.request.urlopen(f"http://{address}{path}", timeout=3) as answer:
                    said[f"{name}{path}"] = answer.read().decode(errors="replace")
                    served += 1
            except (OSError, ValueError):
                continue  # the broker and the database speak other protocols
    assert served >= 6, sorted(said)  # sink, engine and executor at least answered both

    host, port = records["database"]["address"].rsplit(":", 1)
    owner = psycopg.conninfo.make_conninfo(
        host=host, port=port, user="postgres", dbname="tapeflow", password=secrets["postgres-postgres"]
    )
    rows_searched = 0
    with psycopg.connect(owner) as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables WHERE schemaname NOT IN "
                "('pg_catalog', 'information_schema', '_timescaledb_catalog', '_timescaledb_config', "
                "'_timescaledb_internal', '_timescaledb_cache', 'timescaledb_information')"
            )
        ]
        for table in tables:
            for label, marker in markers.items():
                found = conn.execute(
                    sql.SQL("SELECT count(*) FROM {} t WHERE t::text LIKE %s").format(sql.SQL(table)), (f"%{marker}%",)
                ).fetchone()[0]
                assert found == 0, f"{label} in {table}"
            rows_searched += conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.SQL(table))).fetchone()[0]
    assert rows_searched > 1000  # the replay's trades, features, ... were there to search
    return markers, said


def assert_nothing_written(home: Path, markers: dict[str, str], said: dict[str, str]) -> None:
    """Once the stack is down: no secret in any file under ``home`` but its secrets directory, and none
    in what it said."""
    files = [f for f in home.rglob("*") if f.is_file() and (home / "secrets") not in f.parents]
    assert len(files) > 50
    for label, marker in markers.items():
        needle = marker.encode()
        assert not [f for f in files if needle in f.read_bytes()], f"{label} written to a file"
        assert not [where for where, text in said.items() if marker in text], f"{label} said"
