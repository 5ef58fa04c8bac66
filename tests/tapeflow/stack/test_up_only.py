"""`up --only NAMES`: which services a partial stack starts, what a name it does not run says, and that a
detached `up` hands the choice to its supervisor. Pure code (no broker, no database): the stacks that run
with `--only` are in test_stack_lifecycle.py and test_history_across_restart.py."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tapeflow.stack import supervisor
from tapeflow.stack.process import StackError
from tapeflow.stack.supervisor import default_services, parse_only, select_services
from tapeflow_runtime.paths import StackPaths
from tapeflow_runtime.settings import Settings
from tests.support.paths import RECORDING


def names(settings: Settings, tmp_path, only: str | None) -> list[str]:
    return [s.name for s in select_services(default_services(settings, StackPaths(tmp_path)), parse_only(only))]


def test_only_keeps_the_broker_the_database_and_the_named_services_in_start_order(tmp_path):
    replay = Settings(home=tmp_path, source=f"replay:{RECORDING}", ui=False)
    every = names(replay, tmp_path, None)
    assert every == [
        "broker",
        "database",
        "sink",
        "engine",
        "executor",
        "labels",
        "guardrail",
        "fake-exchange",
        "producer",
    ]
    assert names(replay, tmp_path, "") == every  # nothing named: every service
    assert names(replay, tmp_path, "broker,database") == ["broker", "database"]
    assert names(replay, tmp_path, "executor, sink") == ["broker", "database", "sink", "executor"]
    # a replay's producer reads its fake exchange: naming the producer brings it
    assert names(replay, tmp_path, "producer") == ["broker", "database", "fake-exchange", "producer"]
    live = Settings(home=tmp_path, ui=True)
    assert names(live, tmp_path, "ui,producer") == ["broker", "database", "producer", "ui"]


def test_a_name_this_configuration_does_not_run_is_one_error_listing_the_ones_it_does(tmp_path):
    settings = Settings(home=tmp_path, ui=False)  # a live stack without the web UI: no ui, no fake exchange
    for only, wrong in (("sink,snik", "snik"), ("ui", "ui"), ("fake-exchange", "fake-exchange")):
        with pytest.raises(StackError) as error:
            names(settings, tmp_path, only)
        message = str(error.value)
        assert message.startswith(f"up --only: {wrong} is not a service") and "\n" not in message
        assert message.endswith("broker, database, sink, engine, executor, labels, guardrail, producer")


def test_a_detached_up_starts_its_supervisor_with_the_same_choice_and_refuses_a_typo_before_starting(
    tmp_path, monkeypatch
):
    paths = StackPaths(tmp_path / "home")
    settings = Settings(home=paths.home, broker=None, database_url=None, ui=False)
    argvs: list[list[str]] = []
    real_popen = subprocess.Popen

    def stand_in(argv, **kwargs):  # a supervisor that reports a healthy stack at once
        argvs.append(argv)
        return real_popen([sys.executable, "-c", "print('stack healthy in 0.1s', flush=True)"], **kwargs)

    monkeypatch.setattr(supervisor.subprocess, "Popen", stand_in)
    said: list[str] = []
    assert supervisor.start_detached(settings, paths, said.append, only=parse_only("sink,engine")) == 0, said
    assert supervisor.start_detached(settings, paths, said.append) == 0, said
    assert argvs == [
        [sys.executable, "-m", "tapeflow", "up", "--only", "engine,sink"],
        [sys.executable, "-m", "tapeflow", "up"],
    ]
    with pytest.raises(StackError, match="snik is not a service"):
        supervisor.start_detached(settings, paths, said.append, only=parse_only("snik"))
    assert len(argvs) == 2  # nothing started for the typo
