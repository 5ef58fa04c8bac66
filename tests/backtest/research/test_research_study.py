"""Research on more than one machine: two `tapeflow research search` workers on one optuna
study in a real PostgreSQL split its trials and report what one worker alone reports; the study's
candidates do not depend on who evaluated them; a worker with other inputs is refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from backtest.research.study import SharedStudy, open_storage, sqlalchemy_url
from sinks.migrate import set_role_passwords
from tests.support.built_once import built_once, copy_of

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

COMMON = (
    "--from",
    "2024-01-01",
    "--to",
    "2024-01-03",
    "--symbols",
    "XRPUSDT",
    "--source",
    "synthetic:3",
    "--min-trades",
    "1",
    "--workers",
    "1",
    "--no-progress",
)


def tapeflow(*args: str, cwd, env=None) -> subprocess.Popen:
    env = {**{k: v for k, v in os.environ.items() if k != "TAPEFLOW_DATABASE_URL"}, "COLUMNS": "200", **(env or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "tapeflow", "research", "search", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finished(proc: subprocess.Popen) -> str:
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    return out


@pytest.fixture(scope="session")
def built_store(tmp_path_factory) -> Path:
    """The feature store of COMMON's inputs, built once per run by `tapeflow research search` itself and
    shared by the workers (tests/support/built_once.py); each test works on its own copy (`store_copy`).
    Why: three tests built the same 2-million-trade store (~9 CPU-s and a minute of a loaded machine
    each). Building a store is what tests/backtest/research/test_research_cli.py and
    test_walk_forward.py test; here it is only the input the workers share."""

    def build(work: Path) -> None:
        finished(
            tapeflow(
                *COMMON,
                "--trials",
                "2",
                "--storage",
                "memory",
                "--store",
                str(work / "store"),
                "--out",
                str(work / "out"),
                cwd=work,
            )
        )

    store = built_once(tmp_path_factory, "research-study-store", build) / "store"
    assert (store / "manifest.json").is_file()
    return store


@pytest.fixture
def store_copy(built_store, tmp_path) -> Path:
    """This test's own copy of the shared feature store (what its workers' `--store` points at)."""
    return copy_of(built_store, tmp_path / "store")


@pytest.fixture
def writer_db(migrated_database):
    """The database migrated as the stack does it, and the writer's conninfo (what research workers use)."""
    set_role_passwords(migrated_database, {"tapeflow_writer": "writer-pass-22"})
    params = conninfo_to_dict(migrated_database)
    return make_conninfo(
        host=params["host"],
        port=params["port"],
        dbname=params["dbname"],
        user="tapeflow_writer",
        password="writer-pass-22",
    )


def report(out_dir) -> dict:
    return json.loads((out_dir / "research.json").read_text())


def evaluated_here(stdout: str) -> int:
    line = next(line for line in stdout.splitlines() if line.startswith("study "))
    return int(line.split(": ", 1)[1].split(" of ", 1)[0])


@pytest.mark.parametrize("sampler,trials", [("grid", 30), ("tpe", 10)])
def test_two_workers_share_one_study_and_report_what_one_worker_does(tmp_path, writer_db, store_copy, sampler, trials):
    options = (
        *COMMON,
        "--sampler",
        sampler,
        "--trials",
        str(trials),
        "--batch",
        "2",
        "--seed",
        "3",
        "--store",
        str(store_copy),
    )
    # one worker alone, in memory (on the feature store the others reuse)
    alone = finished(tapeflow(*options, "--storage", "memory", "--out", str(tmp_path / "alone"), cwd=tmp_path))
    assert "study " not in alone
    # two workers at once on the stack's database: one finds it the default way (the stack's
    # database, here TAPEFLOW_DATABASE_URL), the other is given its conninfo as on another machine
    w = conninfo_to_dict(writer_db)
    url = f"postgresql://{w['user']}:{w['password']}@{w['host']}:{w['port']}/{w['dbname']}"
    a = tapeflow(*options, "--out", str(tmp_path / "a"), cwd=tmp_path, env={"TAPEFLOW_DATABASE_URL": url})
    b = tapeflow(*options, "--storage", writer_db, "--out", str(tmp_path / "b"), cwd=tmp_path)
    out_a, out_b = finished(a), finished(b)

    one, ra, rb = report(tmp_path / "alone"), report(tmp_path / "a"), report(tmp_path / "b")
    assert ra["study"] == rb["study"] and ra["study"]
    assert one["trials"] == ra["trials"] == rb["trials"] == trials
    # every trial evaluated once, by one of the two
    assert ra["evaluated_here"] + rb["evaluated_here"] == trials
    if sampler == "grid":  # 15 batches of 2: both workers, started together, take some (14/16 measured)
        assert ra["evaluated_here"] > 0 and rb["evaluated_here"] > 0
    assert (evaluated_here(out_a), evaluated_here(out_b)) == (ra["evaluated_here"], rb["evaluated_here"])
    for shared in (ra, rb):
        assert shared["best"] == one["best"]
        assert shared["deflated_sharpe_ratio"] == one["deflated_sharpe_ratio"] and shared["pbo"] == one["pbo"]
    # the study is in the database, in tapeflow's schema, owned by the writer, with one trial per slot
    with psycopg.connect(writer_db) as conn:
        owner = conn.execute(
            "SELECT tableowner FROM pg_tables WHERE schemaname = 'optuna' AND tablename = 'trials'"
        ).fetchone()
        assert owner == ("tapeflow_writer",)
        assert conn.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename = 'trials'"
        ).fetchone() == (0,)
    study = optuna.load_study(study_name=ra["study"], storage=open_storage(writer_db))
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert sorted(t.user_attrs["slot"] for t in complete) == list(range(trials))
    # a third worker later joins a finished study: nothing left to do, the same report
    c = finished(tapeflow(*options, "--storage", url, "--out", str(tmp_path / "c"), cwd=tmp_path))
    rc = report(tmp_path / "c")
    assert rc["evaluated_here"] == 0 and rc["best"] == one["best"] and rc["trials"] == trials
    assert "0 of its" in c


def test_a_worker_with_other_inputs_is_refused_in_one_line(tmp_path, writer_db, store_copy):
    options = (
        *COMMON,
        "--sampler",
        "grid",
        "--trials",
        "4",
        "--batch",
        "2",
        "--study",
        "shared-name",
        "--storage",
        writer_db,
        "--store",
        str(store_copy),
    )
    finished(tapeflow(*options, "--out", str(tmp_path / "a"), cwd=tmp_path))
    other = tapeflow(*options[:-4], "--objective", "pf", *options[-4:], "--out", str(tmp_path / "b"), cwd=tmp_path)
    out, err = other.communicate(timeout=600)
    assert other.returncode != 0
    errors = [line for line in err.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and errors[0].startswith("error: study 'shared-name' was made for other inputs")
    assert "Traceback" not in err


def test_a_bad_storage_is_one_error_line_without_the_password(tmp_path):
    proc = tapeflow(
        *COMMON,
        "--trials",
        "2",
        "--storage",
        "postgresql://someone:secret-pw@127.0.0.1:1/nothing",
        "--out",
        str(tmp_path / "o"),
        cwd=tmp_path,
    )
    out, err = proc.communicate(timeout=600)
    assert proc.returncode != 0 and err.strip().splitlines()[-1].startswith("error: study storage:")
    assert "Traceback" not in err
    assert "secret-pw" not in err + out


def test_a_dead_workers_trial_is_failed_and_its_slot_claimed_again(database, monkeypatch):
    """A worker killed with trials running: once their heartbeats are older than the grace period, the
    next worker fails them and claims the slots again, so the study still completes its budget."""
    import backtest.research.study as study_module

    monkeypatch.setattr(study_module, "GRACE_S", 2)
    monkeypatch.setattr(study_module, "HEARTBEAT_S", 1)
    inputs = {"test": "stale"}
    dead = SharedStudy(open_storage(database), "stale", "grid", 0, inputs)
    claims = dead.claim(2, budget=3)
    assert [c.slot for c in claims] == [0, 1]
    dead.tell(claims[0], 1.0, {})
    dead.close()  # no more heartbeats for slot 1: as if the worker had been killed
    alive = SharedStudy(open_storage(database), "stale", "grid", 0, inputs)
    evaluated = []

    def evaluate(batch):
        for claim in batch:
            evaluated.append(claim.slot)
            alive.tell(claim, float(claim.slot), {})

    began = time.monotonic()
    study_module.run_study(alive, 3, 2, evaluate, poll_s=0.2)
    alive.close()
    assert sorted(evaluated) == [1, 2] and time.monotonic() - began < 60
    assert [t.user_attrs["slot"] for t in alive.complete()] == [0, 1, 2]


def test_storage_urls():
    assert sqlalchemy_url("postgresql://u:p@h:5/d") == "postgresql+psycopg://u:p@h:5/d"
    assert sqlalchemy_url("sqlite:///x.db") == "sqlite:///x.db"
    url = sqlalchemy_url("host=127.0.0.1 port=5433 user=w password=p@ss dbname=tapeflow")
    assert url == "postgresql+psycopg://w:p%40ss@127.0.0.1:5433/tapeflow"
