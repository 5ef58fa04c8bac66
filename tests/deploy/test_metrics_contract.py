"""Every PromQL expression (alert rules and dashboard panels) parses, and reads metrics that exist.

1. promtool parses each expression (as a recording rule, Grafana's $__rate_interval/$__interval
   replaced by 1m);
2. promql-parser gives its syntax tree, from which every selector's metric name (or `__name__` regex)
   and every label it matches on, groups by, or joins on is taken;
3. those are compared with a real scrape of the running services: producer (against the fake
   exchange, with dropped and garbage frames so gaps, resyncs and dead letters happen), engine, sink,
   executor and notifier, each a `tapeflow` process against the session's broker and database, with
   undecodable records written to md.trades and signals so every dead-letter path is taken.
A label must be on the metric itself or be one Prometheus adds (job, instance); `up` is Prometheus' own.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import promql_parser
import pytest
import yaml
from confluent_kafka import Producer
from prometheus_client.parser import text_string_to_metric_families

from sinks.migrate import migrate
from tapeflow.stack.process import free_port
from tapeflow_runtime.kafka_client import ensure_topics
from tests.support.paths import REPO
from tests.support.services import Service, database_url, metrics_text, wait_healthy
from tests.support.waiting import services_alive, wait_until

_spec = importlib.util.spec_from_file_location("tapeflow_dashboards", REPO / "deploy" / "grafana" / "dashboards.py")
dashboards = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(dashboards)

TARGET_LABELS = {"job", "instance"}
PROMETHEUS_OWN = {"up"}
SYMBOLS = ("BTCUSDT", "ETHUSDT")


# --- the expressions ------------------------------------------------------------------------------------------
def expressions() -> dict[str, str]:
    out = {}
    alerts = yaml.safe_load((REPO / "deploy" / "prometheus" / "alerts.yml").read_text())
    for group in alerts["groups"]:
        for rule in group["rules"]:
            out[f"alert {rule['alert']}"] = rule["expr"]
    for d in dashboards.DASHBOARDS:
        for p in d.panels:
            for i, q in enumerate(p.queries):
                if isinstance(q, dashboards.PromQL):
                    out[f"{d.uid} / {p.title} / {chr(65 + i)}"] = q.expr
    return {k: v.replace("$__rate_interval", "1m").replace("$__interval", "1m") for k, v in out.items()}


def test_promtool_parses_every_expression(tmp_path):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed (Debian package prometheus; deploy/bootstrap.sh installs it)")
    exprs = list(expressions().items())
    rules = {
        "groups": [
            {"name": "parse", "rules": [{"record": f"tapeflow:check_{i}", "expr": e} for i, (_, e) in enumerate(exprs)]}
        ]
    }
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump(rules))
    res = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in res.stdout
    assert any(k.startswith("tapeflow-pipeline") for k, _ in exprs) and any(k.startswith("alert") for k, _ in exprs)


# --- the syntax tree ----------------------------------------------------------------------------------------
class Uses:
    """What one expression needs: selectors (name or name regex, matcher labels) and grouping labels,
    each grouping label with the selectors under it."""

    def __init__(self) -> None:
        self.selectors: list[tuple[str | None, str | None, set[str]]] = []  # (name, name regex, labels)
        self.groupings: list[tuple[set[str], list[int]]] = []  # (labels, indexes into selectors)

    def walk(self, node) -> list[int]:
        """Collects under `node`; returns the indexes of the selectors below it."""
        kind = type(node).__name__
        if kind == "VectorSelector":
            name, regex, labels = node.name or None, None, set()
            for m in node.matchers.matchers:
                if m.name == "__name__":
                    regex = m.value
                else:
                    labels.add(m.name)
            self.selectors.append((name, regex, labels))
            return [len(self.selectors) - 1]
        if kind == "MatrixSelector":
            return self.walk(node.vector_selector)
        if kind in ("ParenExpr", "UnaryExpr", "SubqueryExpr"):
            return self.walk(node.expr)
        if kind == "Call":
            return [i for arg in node.args for i in self.walk(arg)]
        if kind == "AggregateExpr":
            below = self.walk(node.expr)
            if node.param is not None:
                below += self.walk(node.param)
            if node.modifier is not None and node.modifier.labels:
                self.groupings.append((set(node.modifier.labels), below))
            return below
        if kind == "BinaryExpr":
            below = self.walk(node.lhs) + self.walk(node.rhs)
            matching = getattr(node.modifier, "matching", None) if node.modifier is not None else None
            if matching is not None and matching.labels:
                self.groupings.append((set(matching.labels), below))
            return below
        assert kind in ("NumberLiteral", "StringLiteral"), f"unhandled PromQL node {kind}"
        return []


def uses(expr: str) -> Uses:
    u = Uses()
    u.walk(promql_parser.parse(expr))
    return u


def test_name_regexes_expand_to_every_alternative():
    assert alternatives("tapeflow_(engine|sink)_lag") == ["tapeflow_engine_lag", "tapeflow_sink_lag"]
    assert alternatives("tapeflow_.*") == []


def test_the_syntax_walk_finds_names_labels_and_groupings():
    u = uses('sum by (job, group) ({__name__=~"tapeflow_(a|b)_x"}) > 3 and on (instance) up{job="e"} == 0')
    assert u.selectors == [(None, "tapeflow_(a|b)_x", set()), ("up", None, {"job"})]
    assert u.groupings == [({"job", "group"}, [0]), ({"instance"}, [0, 1])]


# --- the scrape ---------------------------------------------------------------------------------------------
def series(text: str) -> dict[str, set[str]]:
    """Sample name -> label names seen on it (union over its series)."""
    out: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, set()).update(sample.labels)
    return out


@pytest.fixture(scope="module")
def scraped(kafka_bootstrap, pg_server) -> dict[str, set[str]]:
    """One scrape per running service, merged (sample name -> label names)."""
    import psycopg
    from psycopg import sql

    home = Path(tempfile.mkdtemp(prefix="tapeflow-metrics-"))
    dbname = f"t_metrics_{os.getpid()}"
    with psycopg.connect(pg_server.conninfo(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    conninfo = pg_server.conninfo(dbname)
    prefix = f"tm{os.getpid()}."
    migrate(conninfo)
    ensure_topics(kafka_bootstrap, prefix=prefix)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAPEFLOW_")}
    env.update(
        {
            "TAPEFLOW_HOME": str(home / "home"),
            "TAPEFLOW_BROKER": kafka_bootstrap,
            "TAPEFLOW_TOPIC_PREFIX": prefix,
            "TAPEFLOW_DATABASE_URL": database_url(conninfo),
            "TAPEFLOW_SYMBOLS": ",".join(SYMBOLS),
            "TAPEFLOW_NOTIFY_WEBHOOK_URL": "http://127.0.0.1:9/nothing",
            "PYTHONUNBUFFERED": "1",
        }
    )
    services: list[Service] = []
    ports: dict[str, int] = {}

    def start(name: str, *args: str) -> Service:
        service = Service(name, list(args), env, home)
        services.append(service)
        return service

    try:
        for name, args in (
            ("sink", ["sink"]),
            ("engine", ["engine", "--prime-hours", "0"]),
            ("executor", ["execute", "--mode", "paper"]),
            ("notifier", ["notify"]),
        ):
            ports[name] = free_port()
            start(name, *args, "--metrics-port", str(ports[name]))
        fake = start(
            "fake-exchange",
            "fake-exchange",
            "--synthetic-seed",
            "11",
            "--synthetic-symbols",
            ",".join(SYMBOLS),
            "--synthetic-duration",
            "1800",
            "--speed",
            "20",
            "--rest-clock",
            "recording",
            "--fault",
            "garbage_every=400",
        )
        urls = json.loads(fake.wait_for_line(r"\{\"ws_url\".*\}", 90).group(0))
        rest = urls["rest_url"]
        ports["producer"] = free_port()
        producer = start(
            "producer",
            "produce",
            "--ws-url",
            urls["ws_url"],
            "--rest-url",
            rest,
            "--spot-url",
            rest,
            "--coinbase-url",
            rest,
            "--metrics-port",
            str(ports["producer"]),
            # no warm start: it would ask the real Binance Vision (unreachable) before streaming
            "--warm-start-hours",
            "0",
        )
        for name, port in ports.items():
            wait_healthy(next(s for s in services if s.name == name), port, 120)

        # frames that never arrive: an agg-id gap (filled from REST) and a broken depth chain (resync)
        time.sleep(3)
        request = urllib.request.Request(
            f"{rest}/_control/faults",
            data=json.dumps({"skip_frames": 40}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        urllib.request.urlopen(request, timeout=10).close()
        # records nobody can decode: the engine, the sink and the executor dead-letter them
        garbage = Producer({"bootstrap.servers": kafka_bootstrap})
        for topic in ("md.trades", "signals"):
            garbage.produce(prefix + topic, key=b"binance:BTCUSDT", value=b"not avro")
        assert garbage.flush(10) == 0

        def merged() -> dict[str, set[str]]:
            out: dict[str, set[str]] = {}
            for port in ports.values():
                for name, labels in series(metrics_text(port)).items():
                    out.setdefault(name, set()).update(labels)
            return out

        wanted = (
            "tapeflow_producer_dlq_messages_total",
            "tapeflow_producer_book_resyncs_total",
            "tapeflow_engine_dlq_messages_total",
            "tapeflow_sink_dlq_messages_total",
            "tapeflow_executor_publish_dlq_messages_total",
            "tapeflow_engine_consumer_lag_messages",
            "tapeflow_sink_consumer_lag_messages",
            "tapeflow_executor_consumer_lag_messages",
            "tapeflow_sink_rows_written_total",
            "tapeflow_engine_input_records_total",
        )
        wait_until(
            lambda: all(w in merged() for w in wanted),
            120,
            lambda: (
                f"not every path was taken: missing {[w for w in wanted if w not in merged()]}\n"
                + "\n".join(s.tail(1500) for s in services)
            ),
            interval=0.5,
            alive=services_alive(services),
        )
        assert producer.proc.poll() is None
        return merged()
    finally:
        for s in services:
            s.kill()
        with psycopg.connect(pg_server.conninfo(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))
        shutil.rmtree(home, ignore_errors=True)


def alternatives(regex: str) -> list[str]:
    """`tapeflow_(a|b)_x` -> [tapeflow_a_x, tapeflow_b_x]; a regex of any other shape -> []."""
    m = re.fullmatch(r"([a-z0-9_]*)\(([a-z0-9_|]+)\)([a-z0-9_]*)", regex)
    return [f"{m[1]}{alt}{m[3]}" for alt in m[2].split("|")] if m else []


@pytest.mark.integration
def test_every_metric_and_label_the_rules_and_dashboards_read_is_exported(scraped):
    problems = []
    for where, expr in expressions().items():
        u = uses(expr)
        matched: list[dict[str, set[str]]] = []
        for name, regex, labels in u.selectors:
            if name in PROMETHEUS_OWN:
                found = {name: set(TARGET_LABELS)}
            elif name is not None:
                found = {name: scraped[name]} if name in scraped else {}
            else:
                found = {n: ls for n, ls in scraped.items() if re.fullmatch(regex, n)}
                # every alternative of tapeflow_(a|b|c)_x must exist, not just one of them
                for alternative in alternatives(regex):
                    if alternative not in scraped:
                        problems.append(f"{where}: no exported metric {alternative!r} (from {regex!r})")
            if not found:
                problems.append(f"{where}: no exported metric {name or regex!r}")
            for n, exported in found.items():
                missing = labels - exported - TARGET_LABELS
                if missing:
                    problems.append(f"{where}: {n} has no label {sorted(missing)} (it has {sorted(exported)})")
            matched.append(found)
        for labels, below in u.groupings:
            for i in below:
                for n, exported in matched[i].items():
                    missing = labels - exported - TARGET_LABELS
                    if missing:
                        problems.append(
                            f"{where}: grouping by {sorted(missing)}, which {n} does not carry "
                            f"(it has {sorted(exported)})"
                        )
    assert not problems, "\n".join(problems)
