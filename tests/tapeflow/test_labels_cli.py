"""`tapeflow labels backfill|show|run|serve` on a migrated PostgreSQL with the planted samples of
tests/review/test_label_job.py: backfill writes the hand-computed labels with progress, show prints
them, the service writes them at its first pass; bad input and a missing database are one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request

import psycopg
import pytest
from typer.testing import CliRunner

from review.label_job import ms
from tapeflow.cli import app
from tapeflow.stack.app_services import http_json
from tapeflow.stack.process import free_port
from tests.review.test_label_job import POS_A, SIG_A, SIG_B, expected, plant
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(120)


def invoke(args: list[str], tmp_path) -> tuple[int, str, str]:
    env = {"TAPEFLOW_HOME": str(tmp_path / "home"), "TAPEFLOW_DATABASE_URL": ""}
    result = CliRunner().invoke(app, args, env=env)
    return result.exit_code, result.stdout, result.stderr


def count(conninfo: str) -> int:
    with psycopg.connect(conninfo) as conn:
        return conn.execute("SELECT count(*) FROM outcome_labels").fetchone()[0]


def test_backfill_then_show(migrated_database, tmp_path):
    with psycopg.connect(migrated_database, autocommit=True) as conn:
        plant(conn)
    code, out, err = invoke(
        ["labels", "backfill", "--from", "2024-01-01", "--to", "2024-01-02", "--database", migrated_database], tmp_path
    )
    assert code == 0, err
    assert out.strip() == "3 labels written for 3 samples (paper); 6 due without price data reaching the horizon"
    assert "paper: 100.0%" in err  # one day: one chunk
    assert count(migrated_database) == 3

    code, out, err = invoke(["labels", "show", POS_A, "--database", migrated_database], tmp_path)
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0].split()[:3] == ["source", "kind", "h"]
    want = expected()
    shown = {(ln.split()[1], ln.split()[2]): ln.split() for ln in lines[1:]}
    assert set(shown) == {("signal", "12"), ("trade", "12")}
    assert float(shown[("trade", "12")][4]) == pytest.approx(want[("trade", POS_A)]["net"], abs=5e-5)
    assert shown[("signal", "12")][-1] == want[("signal", SIG_A)]["label"]

    # another strategy only: nothing of these
    code, out, _ = invoke(
        [
            "labels",
            "backfill",
            "--from",
            "2024-01-01",
            "--to",
            "2024-01-02",
            "--strategy",
            "other",
            "--no-progress",
            "--database",
            migrated_database,
        ],
        tmp_path,
    )
    assert code == 0 and out.startswith("0 labels written for 0 samples")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["backfill", "--from", "yesterday", "--to", "2024-01-02"], "error: --from 'yesterday': expected"),
        (["backfill", "--from", "2024-01-02", "--to", "2024-01-01"], "error: --to 2024-01-01 is not after --from"),
        (
            ["backfill", "--from", "2024-01-01", "--to", "2024-01-02", "--strategy-threshold", "s:1"],
            "error: --strategy-threshold 's:1': expected NAME=PERCENT",
        ),
        (["backfill", "--from", "2024-01-01", "--to", "2024-01-02", "--horizons", "12,x"], "error: --horizons"),
        (["backfill", "--from", "2024-01-01", "--to", "2024-01-02"], "error: no database:"),
        (["show", "anything"], "error: no database:"),
    ],
)
def test_bad_input_and_no_database_are_one_line_errors(args, message, tmp_path):
    code, out, err = invoke(["labels", *args], tmp_path)
    assert code != 0
    assert err.startswith(message) and len(err.strip().splitlines()) == 1, err


def test_show_unknown_id_and_an_unmigrated_database(migrated_database, pg_server, tmp_path):
    code, _, err = invoke(["labels", "show", "nope", "--database", migrated_database], tmp_path)
    assert (
        code == 1
        and err.strip() == "error: no outcome labels for 'nope' (not matured yet, or not a signal or position id)"
    )
    with psycopg.connect(migrated_database, autocommit=True) as conn:
        conn.execute("DROP TABLE outcome_labels")
    code, _, err = invoke(["labels", "show", SIG_B, "--database", migrated_database], tmp_path)
    assert code == 1 and err.startswith("error: database: ") and "tapeflow db migrate" in err
    assert len(err.strip().splitlines()) == 1


def test_service_writes_the_matured_labels_at_its_first_pass(migrated_database, tmp_path):
    with psycopg.connect(migrated_database, autocommit=True) as conn:
        plant(conn)
    port = free_port()
    env = {**os.environ, "TAPEFLOW_HOME": str(tmp_path / "home"), "TAPEFLOW_DATABASE_URL": ""}
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tapeflow",
            "labels",
            "serve",
            "--database",
            migrated_database,
            "--metrics-port",
            str(port),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:

        def passed() -> bool:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            code, body = http_json(f"http://127.0.0.1:{port}/health")
            return code == 200 and body.get("last_run_ms") is not None

        wait_until(passed, 60, "the service's first pass")
        assert count(migrated_database) == 3
        with psycopg.connect(migrated_database) as conn:
            assert conn.execute("SELECT source FROM outcome_label_progress").fetchall() == [("paper",)]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:  # nosec B310
            metrics = resp.read().decode()
        assert 'tapeflow_outcome_labels_written_total{source="paper"} 3.0' in metrics
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0
        log.close()


def test_backtest_stores_its_outcome_labels_beside_the_run(migrated_database, tmp_path):
    import yaml

    from tests.review.test_labels_backtest import EXECUTOR, STRATEGY

    strategy, executor = tmp_path / "ws_only.yaml", tmp_path / "executor.yaml"
    strategy.write_text(yaml.safe_dump(STRATEGY))
    executor.write_text(yaml.safe_dump(EXECUTOR))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAPEFLOW_")}
    c = psycopg.conninfo.conninfo_to_dict(migrated_database)
    url = f"postgresql://{c['user']}:{c.get('password', '')}@{c['host']}:{c['port']}/{c['dbname']}"
    env.update(TAPEFLOW_HOME=str(tmp_path / "home"), TAPEFLOW_DATABASE_URL=url)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tapeflow",
            "backtest",
            "--source",
            "synthetic:5",
            "--symbols",
            "BTCUSDT",
            "--from",
            "2024-01-01T06:00",
            "--to",
            "2024-01-01T19:00",
            "--strategy",
            str(strategy),
            "--executor-config",
            str(executor),
            "--no-progress",
            "--out",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "database: stored as run" in proc.stdout, proc.stdout
    line = next(ln for ln in proc.stdout.splitlines() if "database: stored as run" in ln)
    run_id = line.split("stored as run ")[1].split()[0]
    written = int(line.split(", ")[-1].split()[0])
    assert line.endswith(f"outcome labels as source backtest:{run_id}")
    with psycopg.connect(migrated_database) as conn:
        rows = conn.execute(
            "SELECT horizon_h, count(*) FROM outcome_labels WHERE source = %s GROUP BY 1", (f"backtest:{run_id}",)
        ).fetchall()
    # 13 h of data: only samples of the first hour reach 12 h (and a trade follows within the hour)
    assert written > 0 and dict(rows) == {12: written}


def test_the_service_also_produces_the_rows_to_the_topic(
    migrated_database, kafka_bootstrap, topic_prefix, read_topic, tmp_path
):
    from tapeflow_runtime.kafka_client import ensure_topics

    with psycopg.connect(migrated_database, autocommit=True) as conn:
        plant(conn)
    ensure_topics(kafka_bootstrap, prefix=topic_prefix)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAPEFLOW_")}
    env.update(
        TAPEFLOW_HOME=str(tmp_path / "home"), TAPEFLOW_BROKER=kafka_bootstrap, TAPEFLOW_TOPIC_PREFIX=topic_prefix
    )
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tapeflow",
            "labels",
            "serve",
            "--database",
            migrated_database,
            "--metrics-port",
            str(port),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:

        def passed() -> bool:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            code, body = http_json(f"http://127.0.0.1:{port}/health")
            return code == 200 and body.get("last_run_ms") is not None

        wait_until(passed, 60, "the service's first pass")
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0
        log.close()
    records = read_topic(kafka_bootstrap, topic_prefix + "outcome.labels", settled=True)
    with psycopg.connect(migrated_database) as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        cur.execute("SELECT * FROM outcome_labels")
        rows = {f"{r['source']}:{r['sample_kind']}:{r['sample_id']}:{r['horizon_h']}": r for r in cur.fetchall()}
    assert len(records) == len(rows) == 3
    for rec in records:
        row, value = rows[rec["key"]], rec["value"]
        assert value["sample_id"] == row["sample_id"] and value["label"] == row["label"]
        assert value["net_pnl"] == pytest.approx(float(row["net_pnl"]), rel=1e-12)
        assert value["t0"] == ms(row["t0"]) and value["computed_at"] == ms(row["computed_at"])


def test_run_is_one_pass_of_labels_and_autopsies(migrated_database, tmp_path):
    from tests.review.stored import store
    from tests.review.test_autopsy_db import _with_book
    from tests.support.execution import T0

    planted = _with_book(T0, 97.5)  # closed through its stop; its stored path reaches past its timeout
    extra = _with_book(T0 + 3_600_000, 101.0)  # its trades carry the market data on past the first's path
    store(migrated_database, planted, extra)
    code, out, err = invoke(["labels", "run", "--database", migrated_database], tmp_path)
    assert code == 0, err
    assert out.strip().splitlines()[-1] == "1 trade autopsies written"
    with psycopg.connect(migrated_database) as conn:
        assert conn.execute("SELECT position_id FROM trade_autopsies").fetchall() == [
            (planted.closed()["position_id"],)
        ]
    code, out, _ = invoke(["labels", "run", "--database", migrated_database], tmp_path)
    assert code == 0 and out.strip().splitlines()[-1] == "0 trade autopsies written"  # once
