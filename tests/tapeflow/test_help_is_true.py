"""`--help` says what the code does: `up` names every component it starts, `engine` the lateness `up` gives
a replay. Both texts once drifted from the code (up listed five of its nine components; engine said
250 ms x speed while up used 1 s x speed)."""

from __future__ import annotations

import re
import subprocess
import sys

from tapeflow.stack.app_services import replay_lateness_ms
from tapeflow.stack.supervisor import default_services, default_steps
from tapeflow_runtime.paths import StackPaths
from tapeflow_runtime.settings import Settings
from tests.support.paths import RECORDING

# how the help text names a component (service or step name -> words)
SPOKEN = {"database": "PostgreSQL", "fake-exchange": "fake exchange", "executor": "paper executor",
          "engine": "signal engine"}


def help_text(*args: str) -> str:
    res = subprocess.run([sys.executable, "-m", "tapeflow", *args, "--help"], capture_output=True, text=True,
                         timeout=60, env={"COLUMNS": "400", "PATH": "/usr/bin:/bin", "TERM": "dumb"})
    assert res.returncode == 0, res.stderr
    return " ".join(res.stdout.split())


def test_up_help_names_every_component_up_starts(tmp_path):
    settings = Settings(home=tmp_path, source=f"replay:{RECORDING}")  # a replay adds the fake exchange
    paths = StackPaths(tmp_path)
    names = [s.name for s in default_services(settings, paths)] + [s.name for s in default_steps(settings, paths)]
    assert {"broker", "database", "migrations", "topics", "sink", "engine", "executor", "producer",
            "fake-exchange"} == set(names)
    text = help_text("up")
    for name in names:
        assert SPOKEN.get(name, name) in text, f"`up --help` does not mention {name}: {text}"


def test_engine_help_states_the_lateness_up_gives_a_replay():
    text = help_text("engine")
    said = re.search(r"`up` gives a replay (\d+) s x speed, at most (\d+) s, and (\d+) s at max speed", text)
    assert said, text
    per_speed, cap, at_max = (int(g) * 1000 for g in said.groups())
    assert replay_lateness_ms("1") == per_speed and replay_lateness_ms("10") == 10 * per_speed
    assert replay_lateness_ms("1000") == cap and replay_lateness_ms("max") == at_max
