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
