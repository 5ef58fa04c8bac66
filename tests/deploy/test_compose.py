"""Checks of the compose stack: docker-compose.yml, deploy/prometheus/ and deploy/grafana/.

Why static checks: the test machines have no Docker daemon and no internet, so the stack cannot be
started here. Instead the files go through the tools that will read them (docker-compose's own schema
validation, promtool's config/rule checks and rule unit tests) and the resolved configuration is
asserted for the properties tapeflow relies on: a single-node KRaft broker that never auto-creates
topics, listeners reachable from both the compose network and the host, healthchecks gating
`depends_on`, pinned images, named volumes, no literal secrets, and every variable documented in
deploy/compose.env.example.

The resolved configuration comes from `docker-compose config` run with a scrubbed environment and an
empty env file, so a developer's shell variables or .env cannot change what is asserted. Both the
Compose v1 (strings) and v2 (mappings) output shapes are accepted for ports and volumes.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.paths import REPO

COMPOSE_FILE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / "deploy" / "compose.env.example"
PROMETHEUS_DIR = REPO / "deploy" / "prometheus"
PROMETHEUS_CONFIG = PROMETHEUS_DIR / "prometheus.yml"
ALERTS = PROMETHEUS_DIR / "alerts.yml"
ALERTS_TEST = PROMETHEUS_DIR / "alerts_test.yml"
GRAFANA_DIR = REPO / "deploy" / "grafana"

INFRASTRUCTURE_SERVICES = {"kafka", "schema-registry", "timescaledb", "prometheus", "grafana"}
# Metrics ports of the tapeflow processes, one compose service each.
APP_SCRAPE_TARGETS = {
    "producer": "producer:9101",
    "engine": "engine:9102",
    "sink": "sink:9103",
    "executor": "executor:9104",
    "notifier": "notifier:9105",
    "producer-okx": "producer-okx:9106",
    "producer-bybit": "producer-bybit:9107",
    "watchlist": "watchlist:9108",
    "labels": "labels:9109",
    "guardrail": "guardrail:9110",
}
ONE_SHOT = {"init"}  # runs to completion; the others wait for it (service_completed_successfully)
NOT_SCRAPED = {"ui"}  # the web UI serves pages, not /metrics
# DESIGN.md: tapeflow_<component>_<what>_<unit>; counters end in _total (Prometheus convention); an
# enumeration gauge (0 active, 1 paused, 2 halted) has no unit and ends in _state.
METRIC_NAME = re.compile(
    r"tapeflow_(producer|engine|sink|executor)_[a-z][a-z0-9_]*_(seconds|messages|bytes|rows|ratio|total|state)"
)
# Compose interpolation: ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?err}; `$$` escapes.
COMPOSE_VARIABLE = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")
MISSING_COMPOSE = (
    "docker-compose is not installed, so docker-compose.yml cannot be validated: "
    "run deploy/bootstrap.sh (it installs Debian's docker-compose package)"
)


# --------------------------------------------------------------------------------------------- helpers
def _docker_compose() -> str:
    path = shutil.which("docker-compose")
    if path is None:
        pytest.fail(MISSING_COMPOSE)
    return path


def _scrubbed_env() -> dict[str, str]:
    """Only what docker-compose needs to run: no variable that the compose file interpolates."""
    return {k: v for k, v in os.environ.items() if k in {"PATH", "HOME", "LANG", "LC_ALL", "TMPDIR"}}


def _run_compose_config(*extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_docker_compose(), *extra, "-f", str(COMPOSE_FILE), "config"],
        cwd=REPO,
        env=_scrubbed_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def _ports(service: dict[str, Any]) -> list[tuple[str, int, int]]:
    """(host_ip, published, target) for each published port, from v1 strings or v2 mappings."""
    out = []
    for port in service.get("ports") or []:
        if isinstance(port, dict):
            out.append((port.get("host_ip", ""), int(port["published"]), int(port["target"])))
        else:
            spec = str(port).split("/", 1)[0]
            parts = spec.rsplit(":", 2)
            host_ip = parts[0] if len(parts) == 3 else ""
            out.append((host_ip, int(parts[-2]), int(parts[-1])))
    return out


def _volumes(service: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(source, target, read_only) per mount, from v1 strings or v2 mappings."""
    out = []
    for vol in service.get("volumes") or []:
        if isinstance(vol, dict):
            out.append((vol.get("source", ""), vol["target"], bool(vol.get("read_only"))))
        else:
            parts = str(vol).split(":")
            mode = parts[2] if len(parts) > 2 else "rw"
            out.append((parts[0], parts[1], "ro" in mode.split(",")))
    return out


def _listener_map(value: str) -> dict[str, tuple[str, int]]:
    """'NAME://host:port,...' -> {NAME: (host, port)}."""
    out = {}
    for item in value.split(","):
        name, address = item.split("://", 1)
        host, port = address.rsplit(":", 1)
        out[name] = (host, int(port))
    return out


def _mount_target(service: dict[str, Any], source: Path) -> str:
    targets = [t for s, t, _ in _volumes(service) if Path(s).resolve() == source.resolve()]
    assert len(targets) == 1, f"{source} should be mounted exactly once, got {targets}"
    return targets[0]


def _env_example() -> dict[str, str]:
    pairs = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, value = line.split("=", 1)
            pairs[key.strip()] = value.strip()
    return pairs


def _alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"] if "alert" in rule]


def _documented_metrics() -> set[str]:
    """Metric names listed in the comment header of alerts.yml (the contract with the code)."""
    header = ALERTS.read_text().split("\ngroups:", 1)[0]
    return set(re.findall(r"^#\s+(tapeflow_[a-z0-9_]+)\s*\|", header, flags=re.MULTILINE))


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool not installed (Debian: apt-get install prometheus); Prometheus files unchecked")
    return path


# -------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def empty_env_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Passed as --env-file so a developer's .env cannot change what is asserted."""
    path = tmp_path_factory.mktemp("compose") / "empty.env"
    path.write_text("")
    return path


@pytest.fixture(scope="module")
def resolved(empty_env_file: Path) -> dict[str, Any]:
    """The configuration docker-compose resolves with every variable at its default."""
    result = _run_compose_config("--env-file", str(empty_env_file))
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


@pytest.fixture(scope="module")
def services(resolved: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return resolved["services"]


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


# ------------------------------------------------------------------------------------ compose validity
def test_docker_compose_accepts_the_file() -> None:
    result = _run_compose_config()
    assert result.returncode == 0, f"docker-compose config failed:\n{result.stderr}"


def test_env_example_resolves_to_the_same_stack_as_the_defaults(empty_env_file: Path) -> None:
    """Copying compose.env.example to .env must be a no-op: its values are the compose defaults."""
    defaults = _run_compose_config("--env-file", str(empty_env_file))
    example = _run_compose_config("--env-file", str(ENV_EXAMPLE))
    assert defaults.returncode == 0, defaults.stderr
    assert example.returncode == 0, example.stderr
    assert yaml.safe_load(example.stdout) == yaml.safe_load(defaults.stdout)


def test_env_example_documents_exactly_the_compose_variables() -> None:
    text = COMPOSE_FILE.read_text()
    used = {m.group(1) for m in COMPOSE_VARIABLE.finditer(text)}
    documented = set(_env_example()) - {"COMPOSE_PROJECT_NAME"}
    assert used == documented, (
        f"undocumented: {sorted(used - documented)}, documented but unused: {sorted(documented - used)}"
    )
    without_default = {m.group(1) for m in COMPOSE_VARIABLE.finditer(text) if m.group(2) != ":-"}
    assert not without_default, f"variables without a ${{VAR:-default}}: {sorted(without_default)}"


def test_infrastructure_services_are_defined(services: dict[str, dict[str, Any]]) -> None:
    assert INFRASTRUCTURE_SERVICES <= set(services)


def test_every_service_has_a_healthcheck(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        if name in ONE_SHOT:
            continue
        check = service.get("healthcheck")
        assert check, f"{name} has no healthcheck"
        assert not check.get("disable"), f"{name} disables its healthcheck"
        test = check.get("test")
        assert isinstance(test, list) and test[0] in {"CMD", "CMD-SHELL"} and len(test) > 1, (
            f"{name}: healthcheck test should be an exec/shell command, got {test!r}"
        )


def test_dependencies_wait_for_healthy_services(services: dict[str, dict[str, Any]]) -> None:
    assert "kafka" in (services["schema-registry"].get("depends_on") or {})
    for name, service in services.items():
        depends = service.get("depends_on") or {}
        assert isinstance(depends, dict), f"{name}: depends_on without conditions starts too early"
        for target, spec in depends.items():
            assert target in services, f"{name} depends on unknown service {target}"
            wanted = "service_completed_successfully" if target in ONE_SHOT else "service_healthy"
            assert spec.get("condition") == wanted, f"{name} -> {target}: {spec}"


def _command(service: dict[str, Any]) -> str:
    command = service.get("command") or []
    return command if isinstance(command, str) else " ".join(command)


def test_topics_and_migrations_run_once_before_every_tapeflow_service(services: dict[str, dict[str, Any]]) -> None:
    init = services["init"]
    assert init["restart"] == "no"
    assert re.search(r"tapeflow topics create\b.*&&\s*tapeflow db migrate\b", _command(init))
    assert set(init["depends_on"]) == {"kafka", "timescaledb"}
    apps = {n: s for n, s in services.items() if s["image"].startswith("tapeflow:") and n not in ONE_SHOT}
    assert set(APP_SCRAPE_TARGETS) == set(apps) - NOT_SCRAPED
    for name, service in apps.items():
        assert service["depends_on"]["init"] == {"condition": "service_completed_successfully"}, name
        assert "topics create" not in _command(service) and "db migrate" not in _command(service), name


def test_notifier_secrets_exist_only_in_the_env_file(raw: dict[str, Any]) -> None:
    """No default for a token or webhook URL (an empty one turns the channel off), .env is git-ignored,
    and the notifier only starts on request (it refuses to start without a channel)."""
    notifier = raw["services"]["notifier"]
    assert notifier["profiles"] == ["notify"]
    secrets = {k: v for k, v in _env(notifier).items() if k.endswith(("_TOKEN", "_WEBHOOK_URL"))}
    assert set(secrets) == {
        "TAPEFLOW_TELEGRAM_BOT_TOKEN",
        "TAPEFLOW_DISCORD_WEBHOOK_URL",
        "TAPEFLOW_NOTIFY_WEBHOOK_URL",
    }
    for key, value in secrets.items():
        assert value == f"${{{key}:-}}", f"{key} must come from .env with an empty default, got {value!r}"
    ignored = subprocess.run(["git", "check-ignore", "-q", ".env"], cwd=REPO, capture_output=True)
    assert ignored.returncode == 0, ".env must be git-ignored"


def test_images_are_pinned(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        image = service["image"]
        repository, _, tag = image.rpartition(":")
        assert repository and "/" not in tag, f"{name}: image {image!r} has no tag"
        assert tag != "latest" and re.search(r"\d", tag), f"{name}: image {image!r} is not pinned"


def test_published_ports_bind_to_loopback_only(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for host_ip, published, _ in _ports(service):
            assert host_ip == "127.0.0.1", f"{name} publishes {published} on {host_ip or 'all interfaces'}"


def test_stateful_services_keep_data_in_named_volumes(
    resolved: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    data_dirs = {
        "kafka": _env(services["kafka"])["KAFKA_LOG_DIRS"],
        "timescaledb": "/var/lib/postgresql/data",
        "prometheus": "/prometheus",
        "grafana": "/var/lib/grafana",
    }
    named = set(resolved.get("volumes") or {})
    for name, data_dir in data_dirs.items():
        mounts = {target: source for source, target, _ in _volumes(services[name])}
        assert mounts.get(data_dir) in named, f"{name}: {data_dir} is not on a named volume ({mounts})"


def test_passwords_come_from_the_environment(raw: dict[str, Any]) -> None:
    for name, service in raw["services"].items():
        for key, value in _env(service).items():
            if "PASSWORD" in key:
                assert re.fullmatch(r"\$\{[A-Z0-9_]+:-[^}]+\}", value), (
                    f"{name}.{key} should be ${{VAR:-dev default}}, got {value!r}"
                )


# ------------------------------------------------------------------------------------------------ kafka
def test_kafka_is_a_single_kraft_node_without_zookeeper(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        assert "zookeeper" not in name and "zookeeper" not in service["image"], name
    env = _env(services["kafka"])
    assert not any("ZOOKEEPER" in key for key in env)
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    voter_id, voter_address = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split("@")
    assert voter_id == env["KAFKA_NODE_ID"]
    controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    listeners = _listener_map(env["KAFKA_LISTENERS"])
    assert voter_address == f"kafka:{listeners[controller][1]}"
    # kafka-storage.sh format rejects anything but a base64url-encoded 16-byte UUID.
    cluster_id = env["CLUSTER_ID"]
    assert len(cluster_id) == 22 and len(base64.urlsafe_b64decode(cluster_id + "==")) == 16


def test_kafka_never_auto_creates_topics(services: dict[str, dict[str, Any]]) -> None:
    assert _env(services["kafka"])["KAFKA_AUTO_CREATE_TOPICS_ENABLE"].lower() == "false"


def test_kafka_is_reachable_from_the_network_and_the_host(services: dict[str, dict[str, Any]]) -> None:
    kafka = services["kafka"]
    env = _env(kafka)
    listeners = _listener_map(env["KAFKA_LISTENERS"])
    advertised = _listener_map(env["KAFKA_ADVERTISED_LISTENERS"])
    protocols = dict(item.split(":") for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert set(listeners) <= set(protocols)
    assert set(advertised) <= set(listeners)
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] not in advertised

    by_address = {address: name for name, address in advertised.items()}
    internal = by_address[("kafka", 9092)]
    host = by_address[("localhost", 29092)]
    assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] == internal
    assert listeners[internal][1] == 9092
    # The host listener's container port is published on the port it advertises.
    assert ("127.0.0.1", 29092, listeners[host][1]) in _ports(kafka)

    registry_env = _env(services["schema-registry"])
    assert registry_env["SCHEMA_REGISTRY_KAFKASTORE_BOOTSTRAP_SERVERS"].endswith("//kafka:9092")


def test_schema_registry_and_timescaledb_expose_what_tapeflow_connects_to(
    services: dict[str, dict[str, Any]],
) -> None:
    assert ("127.0.0.1", 8081, 8081) in _ports(services["schema-registry"])
    assert ("127.0.0.1", 5432, 5432) in _ports(services["timescaledb"])
    db_env = _env(services["timescaledb"])
    assert db_env["POSTGRES_DB"] == "tapeflow"
    assert "pg_isready" in " ".join(services["timescaledb"]["healthcheck"]["test"])


# ------------------------------------------------------------------------------------------- prometheus
def test_prometheus_config_scrapes_every_tapeflow_process(services: dict[str, dict[str, Any]]) -> None:
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    targets = {
        job["job_name"]: [t for sc in job.get("static_configs", []) for t in sc["targets"]]
        for job in config["scrape_configs"]
    }
    for job, target in APP_SCRAPE_TARGETS.items():
        assert targets.get(job) == [target]
    for rule_file in config["rule_files"]:
        assert (PROMETHEUS_DIR / rule_file).is_file(), f"rule file {rule_file} missing"

    prometheus = services["prometheus"]
    mounted_at = _mount_target(prometheus, PROMETHEUS_DIR)
    assert f"--config.file={mounted_at}/{PROMETHEUS_CONFIG.name}" in prometheus["command"]


def test_alert_rules_cover_freshness_lag_dead_letters_and_sink_errors() -> None:
    rules = {rule["alert"]: rule for rule in _alert_rules()}
    assert {
        "TapeflowMarketDataStale",
        "TapeflowConsumerLagHigh",
        "TapeflowDeadLettersGrowing",
        "TapeflowSinkErrors",
    } <= set(rules)
    freshness = rules["TapeflowMarketDataStale"]["expr"]
    assert "tapeflow_producer_last_event_age_seconds" in freshness
    assert re.search(r"\)\s*>\s*30\s*$", freshness)
    for name, rule in rules.items():
        assert rule.get("labels", {}).get("severity") in {"warning", "critical"}, name
        assert rule.get("annotations", {}).get("summary"), name


def test_alert_metric_names_follow_the_convention_and_are_documented() -> None:
    documented = _documented_metrics()
    assert "tapeflow_producer_last_event_age_seconds" in documented
    for metric in documented:
        assert METRIC_NAME.fullmatch(metric), f"{metric} breaks tapeflow_<component>_<what>_<unit>"

    exprs = [rule["expr"] for rule in _alert_rules()]
    name_patterns = [re.compile(p) for e in exprs for p in re.findall(r'__name__=~"([^"]+)"', e)]
    literal = {name for e in exprs for name in re.findall(r"tapeflow_[a-z0-9_]+", re.sub(r'__name__=~"[^"]+"', "", e))}
    assert literal <= documented, f"used but not listed in the header: {sorted(literal - documented)}"
    for pattern in name_patterns:
        assert any(pattern.fullmatch(m) for m in documented), f"{pattern.pattern} matches no listed metric"
    for metric in documented:
        assert metric in literal or any(p.fullmatch(metric) for p in name_patterns), (
            f"{metric} is listed but no alert uses it"
        )


def test_promtool_accepts_the_prometheus_config() -> None:
    result = subprocess.run(
        [_promtool(), "check", "config", str(PROMETHEUS_CONFIG)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_accepts_the_alert_rules() -> None:
    result = subprocess.run([_promtool(), "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_promtool_case() -> None:
    cases = yaml.safe_load(ALERTS_TEST.read_text())["tests"]
    tested = {t["alertname"] for case in cases for t in case.get("alert_rule_test", []) if t.get("exp_alerts")}
    assert {rule["alert"] for rule in _alert_rules()} <= tested, "an alert with no case in which it fires"


def test_alerts_fire_exactly_at_their_thresholds() -> None:
    """promtool runs deploy/prometheus/alerts_test.yml: synthetic series on both sides of each threshold."""
    result = subprocess.run(
        [_promtool(), "test", "rules", ALERTS_TEST.name],
        cwd=PROMETHEUS_DIR,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# ---------------------------------------------------------------------------------------------- grafana
def _datasources() -> dict[str, dict[str, Any]]:
    found = {}
    for path in sorted((GRAFANA_DIR / "provisioning" / "datasources").glob("*.yml")):
        for ds in yaml.safe_load(path.read_text())["datasources"]:
            found[ds["type"]] = ds
    return found


def test_grafana_reads_timescaledb_as_the_readonly_role(services: dict[str, dict[str, Any]]) -> None:
    ds = _datasources()["postgres"]
    assert ds["user"] == "tapeflow_readonly"
    assert ds["jsonData"]["database"] == _env(services["timescaledb"])["POSTGRES_DB"]
    host, port = ds["url"].split(":")
    assert host in services and int(port) == 5432
    password_ref = re.fullmatch(r"\$\{?([A-Z0-9_]+)\}?", ds["secureJsonData"]["password"])
    assert password_ref, "the datasource password must come from the environment"
    assert password_ref.group(1) in _env(services["grafana"]), "compose must pass the password to grafana"


def test_grafana_reads_the_stack_prometheus(services: dict[str, dict[str, Any]]) -> None:
    ds = _datasources()["prometheus"]
    assert ds["url"] == "http://prometheus:9090"
    assert "prometheus" in services


def test_grafana_provisioning_and_dashboards_are_mounted_where_grafana_looks(
    services: dict[str, dict[str, Any]],
) -> None:
    grafana = services["grafana"]
    assert _mount_target(grafana, GRAFANA_DIR / "provisioning") == "/etc/grafana/provisioning"
    providers = yaml.safe_load((GRAFANA_DIR / "provisioning" / "dashboards" / "dashboards.yml").read_text())
    paths = [p["options"]["path"] for p in providers["providers"]]
    assert paths == [_mount_target(grafana, GRAFANA_DIR / "dashboards")]
    assert all(ro for _, target, ro in _volumes(grafana) if target.startswith("/etc/grafana"))


def test_the_web_ui_is_published_on_loopback_and_reads_as_the_readonly_role(
    services: dict[str, dict[str, Any]],
) -> None:
    ui = services["ui"]
    assert [(host, container) for host, _, container in _ports(ui)] == [("127.0.0.1", 8050)]
    env = _env(ui)
    assert env["TAPEFLOW_UI_PORT"] == "8050" and env["TAPEFLOW_READONLY_PASSWORD"]
    assert _command(ui) == "tapeflow ui" and "Bearer" in " ".join(ui["healthcheck"]["test"])
