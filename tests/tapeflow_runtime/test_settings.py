"""Configuration: sources, validation errors as one-line messages, secrets never printed."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tapeflow_runtime.settings import ConfigError, load_settings, mask_url

SECRET = "s3cr3t-Pa55word"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for key in list(os.environ):
        if key.startswith("TAPEFLOW_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)  # no stray .env from the developer's checkout
    monkeypatch.setenv("TAPEFLOW_HOME", str(tmp_path / "home"))


def run_cli(*args, env_extra=None, cwd=None):
    env = {k: v for k, v in os.environ.items()}
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-m", "tapeflow", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=60
    )


def test_defaults():
    s = load_settings()
    assert s.symbols == ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT"]
    assert s.broker is None and s.database_url is None  # embedded stack by default


@pytest.mark.parametrize(
    "env,needle",
    [
        ({"TAPEFLOW_BROKER": "localhost"}, "TAPEFLOW_BROKER"),
        ({"TAPEFLOW_BROKER": "kafka:99999"}, "TAPEFLOW_BROKER"),
        ({"TAPEFLOW_SYMBOLS": "BTCUSDT,DOGE-PERP"}, "unknown symbol 'DOGE-PERP'"),
        ({"TAPEFLOW_DATABASE_URL": "mysql://u:p@h/db"}, "TAPEFLOW_DATABASE_URL"),
        ({"TAPEFLOW_SCHEMA_REGISTRY_URL": "registry:8081"}, "TAPEFLOW_SCHEMA_REGISTRY_URL"),
        ({"TAPEFLOW_LOG_LEVEL": "LOUD"}, "TAPEFLOW_LOG_LEVEL"),
        ({"TAPEFLOW_SINK_WRITERS": "0"}, "TAPEFLOW_SINK_WRITERS"),
    ],
)
def test_invalid_values_name_the_setting(monkeypatch, env, needle):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert needle in str(err.value)
    assert "\n" not in str(err.value)


def test_sink_writers_default_and_override(monkeypatch):
    assert load_settings().sink_writers == 2
    monkeypatch.setenv("TAPEFLOW_SINK_WRITERS", "4")
    assert load_settings().sink_writers == 4


def test_symbols_are_normalised_and_deduplicated(monkeypatch):
    monkeypatch.setenv("TAPEFLOW_SYMBOLS", "btcusdt, ethusdt BTCUSDT")
    assert load_settings().symbols == ["BTCUSDT", "ETHUSDT"]


def test_yaml_file_and_env_precedence(monkeypatch, tmp_path):
    cfg = tmp_path / "tapeflow.yaml"
    cfg.write_text("symbols: [SOLUSDT]\nbroker: kafka.internal:9092\nlog_level: DEBUG\n")
    s = load_settings(cfg)
    assert s.symbols == ["SOLUSDT"] and s.broker == "kafka.internal:9092" and s.log_level == "DEBUG"
    monkeypatch.setenv("TAPEFLOW_BROKER", "other:9093")
    assert load_settings(cfg).broker == "other:9093"  # env beats the file


def test_yaml_unknown_key_rejected(tmp_path):
    cfg = tmp_path / "tapeflow.yaml"
    cfg.write_text("brokers: kafka:9092\n")
    with pytest.raises(ConfigError, match="brokers.*unknown setting"):
        load_settings(cfg)


def test_dotenv_file_is_read(tmp_path):
    (tmp_path / ".env").write_text("TAPEFLOW_SYMBOLS=XRPUSDT\n")
    assert load_settings().symbols == ["XRPUSDT"]


def test_unreadable_config_file(tmp_path):
    with pytest.raises(ConfigError, match="not a readable file"):
        load_settings(tmp_path / "missing.yaml")


def test_secret_from_file(monkeypatch, tmp_path):
    f = tmp_path / "db_url"
    f.write_text(f"postgresql://writer:{SECRET}@db.example:5432/tapeflow\n")
    monkeypatch.setenv("TAPEFLOW_DATABASE_URL_FILE", str(f))
    s = load_settings()
    assert s.database_url.get_secret_value().endswith("/tapeflow")
    assert SECRET not in repr(s) and SECRET not in str(s.masked())
    assert s.masked()["database_url"] == "postgresql://writer:***@db.example:5432/tapeflow"


def test_mask_url_keeps_user_and_host():
    assert mask_url("postgresql://u:p%40ss@h:5/db") == "postgresql://u:***@h:5/db"
    assert mask_url("postgresql://h/db") == "postgresql://h/db"


def test_cli_reports_config_error_in_one_line_without_traceback(tmp_path):
    res = run_cli("status", env_extra={"TAPEFLOW_BROKER": "not a url"}, cwd=tmp_path)
    assert res.returncode == 2
    assert res.stderr.startswith("error: invalid configuration: broker (TAPEFLOW_BROKER)")
    assert "Traceback" not in res.stderr + res.stdout
    assert len(res.stderr.strip().splitlines()) == 1


def test_cli_unreadable_config_flag(tmp_path):
    res = run_cli("--config", str(tmp_path / "nope.yaml"), "status", cwd=tmp_path)
    assert res.returncode == 2 and "not a readable file" in res.stderr and "Traceback" not in res.stderr


def test_status_never_prints_secrets(tmp_path):
    env = {
        "TAPEFLOW_DATABASE_URL": f"postgresql://u:{SECRET}@127.0.0.1:1/x",
        "TAPEFLOW_BINANCE_API_SECRET": SECRET,
        "TAPEFLOW_BROKER": "127.0.0.1:1",
    }
    for args in (["status"], ["status", "--json"]):
        res = run_cli(*args, env_extra=env, cwd=tmp_path)
        assert res.returncode == 1  # nothing is reachable, so not healthy
        assert SECRET not in res.stdout + res.stderr
        assert "********" in res.stdout  # the secret is shown as masked, not omitted silently


def test_config_flag_is_used_and_does_not_leak_into_the_environment(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("broker: 127.0.0.1:1\nsymbols: [ETHUSDT]\n")
    res = run_cli("--config", str(cfg), "status", "--json", cwd=tmp_path)
    import json

    config = json.loads(res.stdout)["config"]
    assert config["broker"] == "127.0.0.1:1" and config["symbols"] == ["ETHUSDT"]
    load_settings(cfg)
    assert "TAPEFLOW_CONFIG" not in os.environ and load_settings().broker is None
