"""tapeflow's own compose services: every command they run exists, and the image contains every package."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tomllib

import yaml

from tests.support.cli_fork import tapeflow_forked
from tests.support.paths import REPO

ROOT = REPO


def app_services() -> dict:
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    return {n: s for n, s in services.items() if str(s.get("image", "")).startswith("tapeflow:")}


def test_the_pipeline_services_are_in_compose():
    assert {"init", "producer", "engine", "sink", "executor", "notifier"} <= set(app_services())


def commands(service: dict) -> list[list[str]]:
    """The tapeflow command lines a service runs: its argv, or each `&&` part of an `sh -c` script."""
    command = service["command"]
    if command[:2] == ["sh", "-c"]:
        return [shlex.split(part.replace("exec ", "")) for part in command[2].split("&&")]
    return [command]


def test_every_tapeflow_command_in_compose_exists_with_its_options():
    env = dict(os.environ)
    for n, (name, argv) in enumerate((name, argv) for name, s in app_services().items() for argv in commands(s)):
        assert argv[0] == "tapeflow", (name, argv)
        # `--help` after the options: click validates every option given before it. The first through
        # `python -m tapeflow` itself, the others forked from a process that imported the CLI
        # (tests/support/cli_fork.py: ~0.03 CPU-s each instead of ~0.4)
        if n == 0:
            res = subprocess.run(
                [sys.executable, "-m", "tapeflow", *argv[1:], "--help"], capture_output=True, text=True, timeout=60
            )
        else:
            res = tapeflow_forked(*argv[1:], "--help", env=env, cwd=REPO, timeout=60)
        assert res.returncode == 0, f"{name}: {argv!r}: {res.stderr}"
    for name, service in app_services().items():
        if name == "init":
            continue
        found = re.search(r"--metrics-port (\d+)", " ".join(service["command"]))
        # the web UI serves its health on its own port (TAPEFLOW_UI_PORT), not a metrics port
        port = found.group(1) if found else str(service["environment"]["TAPEFLOW_UI_PORT"])
        assert port in " ".join(service["healthcheck"]["test"]), f"{name}: healthcheck probes another port"


def test_image_contains_every_python_package():
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    copied = {line.split()[1] for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("COPY ")}
    for pattern in packages:
        assert pattern.rstrip("*") in copied, f"Dockerfile does not COPY {pattern}"
