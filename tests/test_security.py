"""No code-executing codec anywhere (security): no module of the repository — product,
tests, benchmarks, deploy scripts — imports pickle or its relatives or loads YAML with a loader that
can build objects, and the engine's Faust app reads and writes its topics and changelog with the
"raw" codec (bytes, decoded by tapeflow's Avro serde), never Faust's pickle codec."""

from __future__ import annotations

import ast
import re
import subprocess

from tests.support.paths import REPO

#: modules that turn bytes into arbitrary objects (or code)
FORBIDDEN_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "jsonpickle", "marshal", "shelve", "joblib"}
#: yaml calls that can construct arbitrary Python objects
UNSAFE_YAML = {"unsafe_load", "unsafe_load_all", "full_load", "full_load_all", "load", "load_all"}


def python_files() -> list:
    listed = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "*.py"], check=True, capture_output=True, text=True
    ).stdout.split()
    return [REPO / name for name in listed]


def findings(path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name.split(".")[0] for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [(node.module or "").split(".")[0]]
        else:
            names = []
        found += [f"{path.relative_to(REPO)}:{node.lineno} imports {n}" for n in names if n in FORBIDDEN_MODULES]
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in UNSAFE_YAML
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "yaml"
        ):
            loader = {k.arg: k.value for k in node.keywords}.get("Loader")
            safe = isinstance(loader, ast.Attribute) and loader.attr in ("SafeLoader", "CSafeLoader")
            if not safe:
                found.append(f"{path.relative_to(REPO)}:{node.lineno} yaml.{node.func.attr} without SafeLoader")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("eval", "exec"):
            found.append(f"{path.relative_to(REPO)}:{node.lineno} calls {node.func.id}")
    return found


def test_no_module_imports_a_code_executing_codec():
    files = python_files()
    assert len(files) > 300  # the whole repository was listed, not an empty tree
    assert [f for path in files for f in findings(path)] == []


def test_the_scan_finds_what_it_forbids(tmp_path, monkeypatch):
    """The checks themselves: each forbidden form in a throwaway file is reported."""
    import tests.test_security as me

    monkeypatch.setattr(me, "REPO", tmp_path)
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import pickle\nfrom marshal import loads\nimport yaml\nyaml.load(s)\n"
        "yaml.load(s, Loader=yaml.SafeLoader)\nyaml.unsafe_load(s)\neval('1')\n"
    )
    assert findings(bad) == [
        "bad.py:1 imports pickle",
        "bad.py:2 imports marshal",
        "bad.py:4 yaml.load without SafeLoader",
        "bad.py:6 yaml.unsafe_load without SafeLoader",
        "bad.py:7 calls eval",
    ]


def test_the_engine_app_uses_raw_codecs(tmp_path):
    from stream_apps.core.strategy import default_strategy_dir
    from stream_apps.faust_app.app import EngineWorker
    from stream_apps.faust_app.config import EngineAppConfig

    config = EngineAppConfig(
        bootstrap="127.0.0.1:1",
        app_id="sec.engine",
        topic_prefix="sec.",
        strategy_files=sorted(default_strategy_dir().glob("*.yaml")),
        datadir=tmp_path / "faust",
    )
    worker = EngineWorker(config)
    table, inputs = worker.table, worker.inputs
    codecs = {
        "table": (table.key_serializer, table.value_serializer),
        "changelog": (table.changelog_topic.key_serializer, table.changelog_topic.value_serializer),
        "inputs": (inputs.key_serializer, inputs.value_serializer),
        "app default key": (worker.app.conf.key_serializer,),
    }
    assert all(codec == "raw" for pair in codecs.values() for codec in pair), codecs
    assert worker.app.conf.value_serializer != "pickle"


#: what bandit scans: every package the project ships or runs (tests and benchmarks are not deployed)
BANDIT_TREES = (
    "producers",
    "stream_apps",
    "schemas",
    "sinks",
    "execution",
    "review",
    "backtest",
    "tapeflow",
    "tapeflow_runtime",
    "tapeflow_notify",
    "tapeflow_ui",
    "fake_exchange",
    "deploy",
)


def test_bandit_finds_nothing_unjustified():
    """bandit over the shipped code: every finding is either fixed or justified on its line
    (``# nosec BXXX # why``). Two exclusions, for reasons: B101 (assert) - the asserts are internal
    invariants and no service runs with ``python -O``; deploy/grafana/dashboards.py - its SQL strings
    are dashboard text Grafana runs as the read-only role, built from that file's own constants, and
    tests/deploy/test_dashboards.py executes every one of them."""
    import json
    import sys

    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "bandit",
            "-q",
            "-r",
            *BANDIT_TREES,
            "-x",
            "deploy/grafana/dashboards.py",
            "-s",
            "B101",
            "-f",
            "json",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    report = json.loads(res.stdout)
    assert report["results"] == [], [(r["filename"], r["line_number"], r["test_id"]) for r in report["results"]]
    assert res.returncode == 0, res.stderr
    scanned = report["metrics"]["_totals"]["loc"]
    assert scanned > 20_000  # the trees were really read
    nosec = [
        (path.relative_to(REPO), line.strip())
        for path in python_files()
        if path.relative_to(REPO).parts[0] in BANDIT_TREES
        for line in path.read_text(encoding="utf-8").splitlines()
        if "# nosec" in line
    ]
    assert len(nosec) >= 20 and [n for n in nosec if not re.search(r"# nosec (B\d+ ?)+ # \w", n[1])] == []


#: tracked files the secret scan leaves out, each a regex for ``--exclude-files`` with why. Only files
#: whose whole content another test checks to be exactly what a generator makes from scanned files:
#: a secret in them would have to come from a scanned file (the generator or what it reads), where the
#: scan finds it. Every hand-written file is scanned. (~8,000 of the ~133,000 lines scanned.)
SECRET_SCAN_EXCLUDED = {
    r"^\.secrets\.baseline$": "the audited baseline itself (its hashes, not secrets)",
    r"^docs/reference/[^/]+\.md$": "every page is docs/gen_reference.py's output, or deploy/grafana/dashboards.py's "
    "(dashboards.md): tests/docs/test_reference.py compares each page with what they "
    "generate and that no other page is there",
    r"^deploy/grafana/dashboards/[^/]+\.json$": "deploy/grafana/dashboards.py's output: tests/deploy/test_dashboards.py "
    "compares each file (`dashboards.py --check`) and that no other is there",
}


#: detect-secrets' filters the scan runs without, each with why. A filter only drops findings (a line
#: filter skips every plugin on its line): without one the scan reports a superset of what the default
#: scan reports, so a clean comparison with the baseline proves at least as much, at the price of the
#: extra findings audited into the baseline.
SECRET_SCAN_FILTERS_OFF = {
    "detect_secrets.filters.heuristic.is_indirect_reference": "its regex runs on every line before any "
    "plugin and was ~23 % of the scan's CPU (43-45 CPU-s with it, 34-35 without, the whole repository); "
    "without it 2 more findings (URLs with test passwords in tests/schemas/test_schemas_registry.py), audited",
}
_FILTERS_OFF = [a for path in SECRET_SCAN_FILTERS_OFF for a in ("--disable-filter", path)]


def test_no_secret_beyond_the_audited_baseline(tmp_path):
    """detect-secrets over every tracked file but the generated ones in ``SECRET_SCAN_EXCLUDED`` (each
    checked elsewhere to be exactly its generator's output from scanned files; ~3.3 of the scan's ~66
    CPU-s), without the filters in ``SECRET_SCAN_FILTERS_OFF``, compared with `.secrets.baseline` by file
    and secret hash (line numbers move with edits): a new finding fails until it is removed or audited
    into the baseline (``detect-secrets scan --exclude-files '^\\.secrets\\.baseline$' --exclude-files
    '^docs/reference/[^/]+\\.md$' --exclude-files '^deploy/grafana/dashboards/[^/]+\\.json$'
    --disable-filter detect_secrets.filters.heuristic.is_indirect_reference > .secrets.baseline``, then
    audit: every entry there is ``is_secret: false``, test fixtures and example values)."""
    import json
    import sys

    baseline = json.loads((REPO / ".secrets.baseline").read_text())
    assert all(item["is_secret"] is False for items in baseline["results"].values() for item in items)
    known = {(name, item["hashed_secret"]) for name, items in baseline["results"].items() for item in items}
    excluded = [a for regex in SECRET_SCAN_EXCLUDED for a in ("--exclude-files", regex)]
    res = subprocess.run(
        [sys.executable, "-m", "detect_secrets", "scan", *excluded, *_FILTERS_OFF],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert res.returncode == 0, res.stderr
    scan = json.loads(res.stdout)
    assert not {f["path"] for f in scan["filters_used"]} & set(SECRET_SCAN_FILTERS_OFF)  # really left off
    found = scan["results"]
    new = sorted(
        (name, item["type"], item["line_number"])
        for name, items in found.items()
        for item in items
        if (name, item["hashed_secret"]) not in known
    )
    assert new == []


def test_the_secret_scan_leaves_out_only_generated_files():
    """What ``SECRET_SCAN_EXCLUDED`` leaves out is what it says: the baseline and the generated pages and
    dashboards, and nothing hand-written beside them (a regex that grew would narrow the scan)."""
    listed = subprocess.run(
        ["git", "-C", str(REPO), "ls-files"], check=True, capture_output=True, text=True
    ).stdout.split("\n")
    left_out = {name for name in listed if any(re.search(regex, name) for regex in SECRET_SCAN_EXCLUDED)}
    generated = {f"docs/reference/{p.name}" for p in (REPO / "docs" / "reference").glob("*.md")} | {
        f"deploy/grafana/dashboards/{p.name}" for p in (REPO / "deploy" / "grafana" / "dashboards").glob("*.json")
    }
    assert left_out == generated | {".secrets.baseline"}
    assert len(generated) >= 14  # the 8 reference pages and the 6 dashboards


def test_the_secret_scan_finds_a_planted_key(tmp_path):
    """The control for the test above: the same scanner reports a key-shaped value in a file."""
    import json
    import sys

    planted = tmp_path / "config.py"
    planted.write_text(
        'api_secret = "q8Zr2LwX9vPn4TkY7mB3sD6hJ1cF5gA0"\naws = "AKIAZ7Q2X4R6T8Y0U2W4"\n'
    )  # pragma: allowlist secret
    res = subprocess.run(
        [sys.executable, "-m", "detect_secrets", "scan", *_FILTERS_OFF, str(planted)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    types = {item["type"] for items in json.loads(res.stdout)["results"].values() for item in items}
    assert {"Secret Keyword", "AWS Access Key"} <= types, types


#: known vulnerabilities accepted, each with why (id -> reason); empty: none is accepted
AUDIT_ACCEPTED: dict[str, str] = {}


def test_no_installed_dependency_has_a_known_vulnerability():
    """pip-audit over the installed environment (what ``make bootstrap`` put in the venv). Every
    vulnerability found fails the test unless it is in ``AUDIT_ACCEPTED`` with a reason. Where the
    vulnerability service answers for no package at all (this project's CI reaches only package
    mirrors: PyPI's JSON API says 404 for everything and osv.dev does not resolve), nothing was
    audited, and the test says so as a skip instead of passing: "no known vulnerability" would be
    false there."""
    import json
    import sys

    import pytest

    res = subprocess.run(
        [sys.executable, "-m", "pip_audit", "-l", "-f", "json", "--progress-spinner", "off"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    try:
        deps = json.loads(res.stdout)["dependencies"]
    except (ValueError, KeyError):
        pytest.fail(f"pip-audit gave no report (exit {res.returncode}): {res.stderr.strip()[-500:]}")
    audited = [d for d in deps if "skip_reason" not in d]
    if not audited:
        reason = deps[0]["skip_reason"] if deps else res.stderr.strip()[-200:]
        pytest.skip(f"pip-audit: the vulnerability service audited none of {len(deps)} packages ({reason})")
    found = [
        (d["name"], d["version"], v["id"]) for d in audited for v in d.get("vulns", []) if v["id"] not in AUDIT_ACCEPTED
    ]
    assert found == [], found
