"""The engine's consumer overrides private methods of faust-streaming and aiokafka, so it runs only on
the releases it was tested with: pinned in pyproject.toml, and checked when the engine starts (another
install, a Docker image, a user's upgrade) with one line saying what to do."""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import version

import pytest

from stream_apps.faust_app.bulk_consumer import TESTED_RELEASES, UNTESTED_ENV, UntestedLibraries, check_tested_releases
from tests.support.paths import REPO


def test_the_installed_releases_are_the_tested_ones_and_pyproject_pins_them():
    check_tested_releases()  # this environment was installed from pyproject.toml
    pins = {
        m.group(1): m.group(2)
        for dep in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
        if (m := re.fullmatch(r"([a-z-]+)==([\d.]+)", dep.strip()))
    }
    assert {name: (pins.get(name),) for name in TESTED_RELEASES} == TESTED_RELEASES
    assert {name: version(name) for name in TESTED_RELEASES} == {name: pins[name] for name in TESTED_RELEASES}


def test_an_untested_release_stops_the_engine_with_what_to_do():
    with pytest.raises(UntestedLibraries) as caught:
        check_tested_releases({"faust-streaming": "0.16.0", "aiokafka": TESTED_RELEASES["aiokafka"][0]}, environ={})
    said = str(caught.value)
    assert "faust-streaming 0.16.0 (tested: 0.15.3)" in said and "aiokafka" not in said  # the tested one is not named
    assert UNTESTED_ENV in said and "\n" not in said


def test_the_override_runs_anyway():
    check_tested_releases({"faust-streaming": "0.16.0", "aiokafka": "0.15.1"}, environ={UNTESTED_ENV: "1"})


#: the library API any module may use; everything else of faust, mode and aiokafka is internal
PUBLIC = {"faust", "faust.types", "aiokafka", "aiokafka.errors", "aiokafka.structs"}
#: the modules allowed past it, each with why
INTERNALS_OWNERS = {
    "stream_apps/faust_app/bulk_consumer.py": "the engine's one owner of faust/aiokafka internals, version-checked",
    "tapeflow_runtime/record_batches.py": "the sink's raw fetch: Kafka's own wire protocol through aiokafka's "
    "protocol classes (FetchRequest v4), not a client's internals",
}


def test_only_the_owner_touches_faust_and_aiokafka_internals():
    """Internals of faust-streaming, mode and aiokafka (a private module imported, a class subclassed
    from one, a private attribute read) live in `bulk_consumer`, checked against `TESTED_RELEASES`: a
    library upgrade then has one module to re-read, not the whole engine."""
    import ast

    found = []
    for package in ("stream_apps", "tapeflow_runtime", "execution", "sinks", "tapeflow", "producers", "backtest"):
        for path in sorted((REPO / package).rglob("*.py")):
            rel = str(path.relative_to(REPO))
            if rel in INTERNALS_OWNERS:
                continue
            for node in ast.walk(ast.parse(path.read_text(), rel)):
                names = (
                    [a.name for a in node.names]
                    if isinstance(node, ast.Import)
                    else ([node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
                )
                found += [
                    f"{rel}:{node.lineno} imports {n}"
                    for n in names
                    if n.split(".")[0] in ("faust", "mode", "aiokafka") and n not in PUBLIC
                ]
    assert found == []
    assert "PromptTableManager" in (REPO / "stream_apps/faust_app/bulk_consumer.py").read_text()
