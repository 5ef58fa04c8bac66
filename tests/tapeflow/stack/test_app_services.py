"""Which of tapeflow's own services `up` starts, and with what, for a live, a replay and a rehearsal stack."""

from __future__ import annotations

from tapeflow.cli import _use_namespace, state
from tapeflow.stack.app_services import WatchlistService, app_services
from tapeflow.stack.supervisor import child_env
from tapeflow_runtime.paths import StackPaths
from tapeflow_runtime.settings import Settings
from tests.support.paths import RECORDING


def launches(settings: Settings, tmp_path) -> dict[str, list[str]]:
    paths = StackPaths(tmp_path)
    return {s.name: s.prepare().argv for s in app_services(settings, paths)}


def test_a_replay_stack_gives_the_engine_no_lateness_guess(tmp_path):
    argv = launches(Settings(home=tmp_path, source=f"replay:{RECORDING}", replay_speed="max"), tmp_path)
    assert set(argv) == {"sink", "engine", "executor", "labels", "guardrail", "fake-exchange", "producer", "ui"}
    assert "--allowed-lateness-ms" not in argv["engine"]  # progress markers order a replay's inputs
    assert "--replay-control-url" in argv["producer"]


def test_a_rehearsal_stack_runs_the_consumers_on_the_namespace_without_a_producer(tmp_path, monkeypatch):
    monkeypatch.setenv("TAPEFLOW_HOME", str(tmp_path))
    monkeypatch.setenv("TAPEFLOW_TOPIC_PREFIX", "team1.")
    state._settings, state.overrides = None, {}
    try:
        _use_namespace("rehearsal")
        settings = state.settings()
    finally:
        state._settings, state.overrides = None, {}
    assert settings.topic_prefix == "team1.rehearsal." and settings.namespace == "rehearsal"
    assert settings.topic("md.trades") == "team1.rehearsal.md.trades"
    argv = launches(settings, tmp_path)
    assert set(argv) == {"sink", "engine", "executor", "labels", "guardrail", "ui"}
    assert "--executor-config" in argv["executor"]  # the replay risk settings: history is older than 60 s
    env = child_env(settings, StackPaths(tmp_path))  # the services see the namespace, not the live topics
    assert env["TAPEFLOW_TOPIC_PREFIX"] == "team1.rehearsal." and env["TAPEFLOW_NAMESPACE"] == "rehearsal"


def test_the_watchlist_runs_only_when_asked_and_reads_a_replay_from_its_beginning(tmp_path):
    assert "watchlist" not in launches(Settings(home=tmp_path), tmp_path)
    live = launches(Settings(home=tmp_path, watchlist=True), tmp_path)
    assert live["watchlist"][-4:-2] == ["tapeflow", "cross-venue"] and "--from-beginning" not in live["watchlist"]
    replay = launches(Settings(home=tmp_path, watchlist=True, source=f"replay:{RECORDING}"), tmp_path)
    assert replay["watchlist"][3:8] == ["cross-venue", "--prime-minutes", "0", "--from-beginning", "--metrics-port"]
    # one way to run whatever the broker: no extra environment on the embedded one or on an external one
    embedded = WatchlistService(Settings(home=tmp_path, watchlist=True), StackPaths(tmp_path)).prepare()
    external = WatchlistService(Settings(home=tmp_path, watchlist=True, broker="kafka:9092"), StackPaths(tmp_path))
    assert embedded.env is None and external.prepare().env is None


def test_the_watchlist_trades_the_configured_strategies_by_absolute_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TAPEFLOW_WATCHLIST_STRATEGIES", "a.yaml, strategies/b.yaml")
    monkeypatch.setenv("TAPEFLOW_WATCHLIST_INSTRUMENT_RULES", "rules.json")
    argv = launches(Settings(home=tmp_path, watchlist=True), tmp_path)["watchlist"]
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "--strategy"] == [
        str(tmp_path / "a.yaml"),
        str(tmp_path / "strategies" / "b.yaml"),
    ]
    assert argv[argv.index("--instrument-rules") + 1] == str(tmp_path / "rules.json")
    monkeypatch.setenv("TAPEFLOW_WATCHLIST_INSTRUMENT_RULES", "")  # compose's unset variable: none
    assert "--instrument-rules" not in launches(Settings(home=tmp_path, watchlist=True), tmp_path)["watchlist"]


def test_the_engine_runs_the_configured_strategies_by_absolute_path_else_the_shipped_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert "--strategy" not in launches(Settings(home=tmp_path), tmp_path)["engine"]  # the shipped ones
    monkeypatch.setenv("TAPEFLOW_STRATEGIES", "mine.yaml, strategies/other.yaml")
    argv = launches(Settings(home=tmp_path), tmp_path)["engine"]
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "--strategy"] == [
        str(tmp_path / "mine.yaml"),
        str(tmp_path / "strategies" / "other.yaml"),
    ]


def test_other_venues_get_their_own_producer_in_a_live_stack_only(tmp_path):
    import pytest
    from pydantic import ValidationError

    live = launches(Settings(home=tmp_path, venues="binance, okx,bybit"), tmp_path)
    assert {"producer", "producer-okx", "producer-bybit"} <= set(live)
    assert live["producer-okx"][3:6] == ["produce", "--exchange", "okx"]
    assert "--exchange" not in live["producer"]  # the Binance producer as before
    replay = launches(Settings(home=tmp_path, venues="binance,okx", source=f"replay:{RECORDING}"), tmp_path)
    assert "producer-okx" not in replay  # a recording is Binance's
    for bad, words in (("binance,kraken", "unknown venue(s) kraken"), ("okx", "binance is required")):
        with pytest.raises(ValidationError, match=words.replace("(", r"\(").replace(")", r"\)")):
            Settings(home=tmp_path, venues=bad)


def test_the_web_ui_runs_on_loopback_unless_configured_and_its_probe_sends_the_token(tmp_path):
    from tapeflow.stack.app_services import UIService, bearer_headers

    argv = launches(Settings(home=tmp_path), tmp_path)["ui"]
    assert argv[3:6] == ["ui", "--host", "127.0.0.1"] and int(argv[argv.index("--port") + 1]) > 0
    assert "ui" not in launches(Settings(home=tmp_path, ui=False), tmp_path)
    external = "postgresql://u:p@db.example/tapeflow"  # without the read-only login `up` runs no UI
    assert "ui" not in launches(Settings(home=tmp_path, database_url=external), tmp_path)
    assert "ui" in launches(Settings(home=tmp_path, database_url=external, readonly_password="ro"), tmp_path)
    fixed = UIService(Settings(home=tmp_path, ui_host="0.0.0.0", ui_port=8765), StackPaths(tmp_path)).prepare()
    assert fixed.argv[-4:] == ["--host", "0.0.0.0", "--port", "8765"] and fixed.address == "0.0.0.0:8765"
    token_file = UIService(Settings(home=tmp_path), StackPaths(tmp_path)).bearer_token_file()
    token = token_file.read_text().strip()
    assert len(token) >= 32 and oct(token_file.stat().st_mode & 0o777) == "0o600"
    assert bearer_headers(str(token_file)) == {"Authorization": f"Bearer {token}"}
    assert bearer_headers("") == {} and bearer_headers(str(tmp_path / "missing")) == {}
