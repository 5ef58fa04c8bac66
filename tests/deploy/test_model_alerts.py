"""The confidence-model alert rules (deploy/prometheus/model_alerts.yml): promtool's unit tests of them
pass, every alert has a case in which it fires, and every metric and label they read is one the labels
service's model health job exports (its own registry, scraped as text) and documented in the header."""

from __future__ import annotations

import re
import shutil
import subprocess

import promql_parser
import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from backtest.research.model_health import Health, HealthThresholds
from backtest.research.model_health_job import Judgement, ModelHealthJob
from tests.support.paths import REPO

DIR = REPO / "deploy" / "prometheus"
RULES = DIR / "model_alerts.yml"
CASES = DIR / "model_alerts_test.yml"


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is not installed (Debian package prometheus; deploy/bootstrap.sh installs it)")
    return path


def _rules() -> list[dict]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def test_promtool_unit_tests_of_the_model_alerts_pass():
    res = subprocess.run(
        [_promtool(), "test", "rules", CASES.name], capture_output=True, text=True, timeout=60, cwd=DIR
    )
    assert res.returncode == 0, res.stdout + res.stderr


def test_every_model_alert_fires_in_a_case_and_prometheus_loads_the_file():
    cases = yaml.safe_load(CASES.read_text())["tests"]
    fired = {t["alertname"] for c in cases for t in c["alert_rule_test"] if t.get("exp_alerts")}
    assert {r["alert"] for r in _rules()} <= fired
    assert "model_alerts.yml" in yaml.safe_load((DIR / "prometheus.yml").read_text())["rule_files"]
    for rule in _rules():
        assert rule["labels"]["severity"] in {"warning", "critical"} and rule["annotations"]["summary"]


def _selectors(node, out: list) -> list:
    if isinstance(node, promql_parser.VectorSelector):
        out.append((node.name, {m.name for m in node.matchers.matchers}))
    for attr in ("expr", "lhs", "rhs"):
        child = getattr(node, attr, None)
        if child is not None:
            _selectors(child, out)
    modifier = getattr(node, "modifier", None)
    if modifier is not None and getattr(modifier, "labels", None):
        out.append((None, set(modifier.labels)))
    matching = getattr(getattr(node, "modifier", None), "matching", None)
    if matching is not None and matching.labels:
        out.append((None, set(matching.labels)))
    return out


def test_the_rules_read_only_what_the_health_job_exports():
    registry = CollectorRegistry()
    job = ModelHealthJob("", dict, registry)
    health = Health(100, 40, 0.5, 0.3, 0.8, "unhealthy", "AUC 0.500 < 0.55")
    job.export([Judgement("v53", "active", 2, "ab" * 32, ("paper",), HealthThresholds(), health)])
    exported = {
        s.name: set(s.labels)
        for f in text_string_to_metric_families(generate_latest(registry).decode())
        for s in f.samples
    }
    header = RULES.read_text().split("groups:")[0]
    documented = set(re.findall(r"^#\s+(tapeflow_[a-z_]+)\s+\|", header, flags=re.M))
    assert documented == {n for n in exported if n.startswith("tapeflow_model_") and not n.endswith("_created")}
    for rule in _rules():
        for name, labels in _selectors(promql_parser.parse(rule["expr"]), []):
            if name is not None:
                assert name in exported, (rule["alert"], name)
                assert labels - {"__name__"} <= exported[name], (rule["alert"], name, labels)
            else:
                assert all(labels <= exported[n] for n in documented), (rule["alert"], labels)
