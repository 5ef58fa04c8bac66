"""`up --detach` waits for a supervisor that is still starting services, however long the whole stack takes.

Found measuring the stack tests at load 25-40: `up --detach` gave up after a fixed startup_timeout_s + 15
(75 s) for the whole stack, while the supervisor, which allows each service startup_timeout_s, went on
and had the stack healthy seconds later (`up` exited 1 at 82.7 s, healthy at 86.9 s), so every stack
test failed on a loaded machine and a user was told the start failed while the stack came up. The wait
now ends only after startup_timeout_s + 15 s without a new line from the supervisor (or when it exits).

The supervisor here is a stand-in process that prints one line per "service" every 4 s: 24 s in all,
beyond the 15.5 s a fixed deadline allowed with startup_timeout_s 0.5 (one CPU-s, ~25 s of waiting)."""

from __future__ import annotations

import subprocess
import sys

from tapeflow.stack import supervisor
from tapeflow_runtime.paths import StackPaths
from tapeflow_runtime.settings import Settings

STAND_IN = """
import time
for name in ("broker", "database", "sink", "engine", "executor"):
    time.sleep(4)
    print(f"{name:<10} pid 1 on 127.0.0.1:1: ready", flush=True)
time.sleep(4)
print("stack healthy in 24.0s (home x); `tapeflow status` to inspect", flush=True)
time.sleep(600)
"""


def test_a_slow_stack_that_keeps_starting_services_is_waited_for(tmp_path, monkeypatch):
    paths = StackPaths(tmp_path / "home")
    settings = Settings(home=paths.home, broker=None, database_url=None, startup_timeout_s=0.5, ui=False)
    real_popen = subprocess.Popen
    launched: list[subprocess.Popen] = []

    def stand_in(argv, **kwargs):
        assert argv[1:] == ["-m", "tapeflow", "up"], argv
        launched.append(real_popen([sys.executable, "-c", STAND_IN], **kwargs))
        return launched[-1]

    monkeypatch.setattr(supervisor.subprocess, "Popen", stand_in)
    said: list[str] = []
    try:
        code = supervisor.start_detached(settings, paths, said.append)
    finally:
        for proc in launched:
            proc.kill()
            proc.wait()
    assert code == 0, said
    assert said[-2].startswith("stack healthy in") and "running in the background" in said[-1], said
