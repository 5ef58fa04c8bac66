"""The image's wheel, built the way the Dockerfile builds it, runs every compose service.

Why: the Docker image installs tapeflow's wheel, not the source tree, so a file missing from the
wheel (the strategy YAMLs once were) crash-loops a container while every test run from the checkout
passes. There is no Docker engine here, so this test does what the image does:

1. copies the files of the Dockerfile's build stage (its COPY lines, minus .dockerignore) into an empty
   directory and runs the stage's own `pip wheel` command there (with `--no-build-isolation`: the
   build backend comes from this environment instead of being downloaded);
2. installs the wheel without its dependencies into a new virtualenv that cannot see the checkout,
   and gives it exactly the wheel's declared dependencies (and theirs), linked from this environment,
   so an import of an undeclared package fails as it would in the image;
3. runs each tapeflow service of docker-compose.yml with the command compose gives it (init first),
   from that virtualenv, against the session's real broker and database, until its /health answers
   200, and runs the compose healthcheck command itself against it.

The producer is pointed at the local fake exchange (from the same wheel) instead of Binance, and every
metrics port is a free one; nothing else differs from compose.
"""

from __future__ import annotations

import compileall
import fnmatch
import importlib.metadata as md
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import psycopg
import pytest
import yaml
from packaging.requirements import Requirement

from tapeflow.stack.process import free_port
from tests.support.services import Service, database_url, http_status, wait_healthy

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
NOTIFY_URL = "http://127.0.0.1:9/unused"  # the notifier only needs a configured channel to run


# --- 1. the build stage ----------------------------------------------------------------------------------
def build_stage() -> tuple[list[tuple[list[str], str]], str, str]:
    """(COPY sources/destination pairs, WORKDIR, the `pip wheel` RUN command) of the Dockerfile's first stage."""

    lines = (REPO / "Dockerfile").read_text().split("\nFROM ", 2)[1].splitlines()
    copies, workdir, run = [], "/", ""
    for line in lines:
        word, _, rest = line.partition(" ")
        if word == "WORKDIR":
            workdir = rest.strip()
        elif word == "COPY":
            *sources, dest = shlex.split(rest)
            copies.append((sources, dest))
        elif word == "RUN" and "pip wheel" in rest:
            run = rest.strip()
    assert copies and run, "the Dockerfile's build stage has no COPY or no `pip wheel`"
    return copies, workdir, run


def docker_ignored(relative: str, patterns: list[str]) -> bool:
    return any(
        fnmatch.fnmatch(relative, p)
        or fnmatch.fnmatch(relative, p.removeprefix("**/"))
        or any(fnmatch.fnmatch(part, p.removeprefix("**/")) for part in Path(relative).parts)
        for p in patterns
    )


def build_wheel(workdir: Path) -> Path:
    copies, _, run = build_stage()
    patterns = [
        p.strip() for p in (REPO / ".dockerignore").read_text().splitlines() if p.strip() and not p.startswith("#")
    ]
    context = workdir / "context"  # stands for the stage's WORKDIR; COPY destinations are relative to it
    for sources, dest in copies:
        target = context / dest
        for source in sources:
            path = REPO / source
            if path.is_dir():
                for file in path.rglob("*"):
                    rel = file.relative_to(REPO).as_posix()
                    if file.is_file() and not docker_ignored(rel, patterns):
                        out = target / file.relative_to(path)
                        out.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copy2(file, out)
            else:
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target / path.name)
    argv = shlex.split(run)
    i = argv.index("pip")
    dist = workdir / "dist"
    argv = [sys.executable, "-m", *argv[i:], "--no-build-isolation"]
    argv[argv.index("--wheel-dir") + 1] = str(dist)
    res = subprocess.run(argv, cwd=context, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    (wheel,) = dist.glob("tapeflow-*.whl")
    return wheel


# --- 2. a clean virtualenv with only the declared dependencies --------------------------------------------
def dependency_closure(requirements: list[str]) -> list[md.Distribution]:
    """The installed distributions that `requirements` need, transitively (markers evaluated, no extras
    beyond the ones asked for)."""
    seen: dict[str, md.Distribution] = {}
    todo = [(Requirement(r), None) for r in requirements]
    while todo:
        req, extra = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": extra or ""}):
            continue
        dist = md.distribution(req.name)
        key = dist.metadata["Name"].lower().replace("_", "-")
        wanted_extras = set(req.extras)
        if key in seen and not wanted_extras:
            continue
        seen[key] = dist
        for sub in dist.requires or []:
            sub_req = Requirement(sub)
            if sub_req.marker is None or sub_req.marker.evaluate({"extra": ""}):
                todo.append((sub_req, None))
            for e in wanted_extras:
                if sub_req.marker is not None and sub_req.marker.evaluate({"extra": e}):
                    todo.append((sub_req, e))
    return list(seen.values())


def make_venv(workdir: Path, wheel: Path) -> Path:
    venv = workdir / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    res = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    with zipfile.ZipFile(wheel) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        requires = [
            line.split(":", 1)[1].strip()
            for line in zf.read(meta).decode().splitlines()
            if line.startswith("Requires-Dist:")
        ]
    requires = [r for r in requires if "extra ==" not in r]
    # the declared dependencies, linked (not copied) from this environment into one directory that a
    # .pth file adds to the clean virtualenv's path; nothing else of this environment is visible. The
    # links are only read: the services run with PYTHONDONTWRITEBYTECODE, so no bytecode is written
    # through them into this environment's site-packages
    deps = workdir / "deps"
    deps.mkdir()
    site = Path(sysconfig.get_paths()["purelib"])
    for dist in dependency_closure(requires):
        for file in dist.files or []:
            top = file.parts[0]
            if top in ("..", "__pycache__") or top.endswith(".pth") or (deps / top).exists():
                continue
            source = site / top
            if source.exists():
                (deps / top).symlink_to(source)
    clean_site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (Path(clean_site) / "declared_dependencies.pth").write_text(f"{deps}\n")
    reuse_kernel_cache(Path(clean_site))
    return venv


def reuse_kernel_cache(site: Path) -> int:
    """numba's on-disk cache of the checkout's kernels (filled once per run: tests/support/kernel_cache.py)
    copied beside the wheel's identical sources, which get the checkout's modification times (numba keys
    a cache entry on its source file's mtime and size; the wheel's bytecode is written again for them).
    Why: the engine, the watchlist and the sink each compiled every kernel they use from scratch, all at
    once (the image does that at its first start too), which was most of this test's CPU and, at load
    40, made it miss its timeout; what the test proves (every service starts from the wheel and answers
    /health) does not depend on who compiled the kernels. A source that differs from the checkout's, or
    a kernel not in the cache, is compiled by the service as before. Returns the cache files copied."""
    copied = 0
    indexes = [f for init in REPO.glob("*/__init__.py") for f in init.parent.rglob("__pycache__/*.nbi")]
    for cache_dir in sorted({f.parent for f in indexes}):
        package = cache_dir.parent.relative_to(REPO)
        installed = site / package
        if not installed.is_dir():
            continue
        same = []
        for source in installed.glob("*.py"):
            original = REPO / package / source.name
            if original.is_file() and original.read_bytes() == source.read_bytes():
                stat = original.stat()
                os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns))
                same.append(source.stem)
        (installed / "__pycache__").mkdir(exist_ok=True)
        for cached in cache_dir.iterdir():
            if cached.suffix in (".nbi", ".nbc") and cached.name.split(".", 1)[0] in same:
                shutil.copy2(cached, installed / "__pycache__" / cached.name)
                copied += 1
        compileall.compile_dir(installed, maxlevels=0, quiet=1)  # the bytecode of the new mtimes
    return copied


# --- 3. the compose services ---------------------------------------------------------------------------
#: the other venues' producers (compose profile `watchlist`): no fake of OKX's or Bybit's websocket
#: runs here, so each is checked to run from the wheel and answer /health with why it is not connected
OFFLINE_VENUES = ("producer-okx", "producer-bybit")


def wait_answering(service: Service, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if http_status(f"http://127.0.0.1:{port}/health"):
            return
        assert service.proc.poll() is None, f"{service.name} exited early\n{service.tail()}"
        time.sleep(0.2)
    raise AssertionError(f"{service.name} not answering within {timeout} s\n{service.tail()}")


def wait_ui_healthy(service: Service, port: int, token_file: Path, timeout: float) -> None:
    """The web UI answers only with its token (created when it starts): its /health with it is 200."""
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert service.proc.poll() is None, f"ui exited: {service.tail(3000)}"
        if token_file.exists():
            req = urllib.request.Request(
                f"http://127.0.0.1:{port}/health", headers={"Authorization": f"Bearer {token_file.read_text().strip()}"}
            )
            try:
                with urllib.request.urlopen(req, timeout=5) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
        time.sleep(0.2)
    raise AssertionError(f"ui not healthy in {timeout} s: {service.tail(3000)}")


def _health_body(url: str) -> dict:
    """/health's JSON body whatever its status (503 while a producer is not connected)."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        return json.loads(error.read())


def tapeflow_services() -> dict[str, dict]:
    return {n: s for n, s in COMPOSE.items() if str(s.get("image", "")).startswith("tapeflow:")}


@pytest.fixture
def workdir():
    path = Path(tempfile.mkdtemp(prefix="tapeflow-wheel-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_every_compose_service_runs_from_the_images_wheel(workdir, kafka_bootstrap, database, topic_prefix):
    wheel = build_wheel(workdir)
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    # every source package and every data file the code reads is in the wheel
    for package in sorted(
        p.parent.name for p in REPO.glob("*/__init__.py") if p.parent.name not in ("tests", "benchmarks")
    ):
        assert f"{package}/__init__.py" in names, f"package {package} is not in the wheel"
    for pattern in (
        "stream_apps/strategies/*.yaml",
        "stream_apps/watchlist/strategies/*.yaml",
        "sinks/migrations/*.sql",
        "schemas/avro/*.avsc",
        "tapeflow_ui/templates/*.html",
        "tapeflow_ui/static/*.js",
        "tapeflow_ui/static/*.css",
        "tapeflow_ui/static/vendor/*.js",
    ):
        shipped = sorted(p.relative_to(REPO).as_posix() for p in REPO.glob(pattern))
        assert shipped and set(shipped) <= names, f"missing from the wheel: {sorted(set(shipped) - names)}"

    venv = make_venv(workdir, wheel)
    bin_dir = venv / "bin"
    run_dir = workdir / "run"  # not the checkout: nothing is importable from the working directory
    run_dir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TAPEFLOW_", "PYTHON", "VIRTUAL_ENV"))}
    env.update(
        {
            "PATH": f"{bin_dir}:{env['PATH']}",
            "TAPEFLOW_HOME": str(workdir / "home"),
            "TAPEFLOW_BROKER": kafka_bootstrap,
            "TAPEFLOW_TOPIC_PREFIX": topic_prefix,
            "TAPEFLOW_DATABASE_URL": database_url(database),
            "TAPEFLOW_SYMBOLS": "BTCUSDT,ETHUSDT",
            "TAPEFLOW_METRICS_HOST": "127.0.0.1",
            "TAPEFLOW_NOTIFY_WEBHOOK_URL": NOTIFY_URL,
            # compose's: `db migrate` gives tapeflow_readonly this login, the UI reads with it
            "TAPEFLOW_READONLY_PASSWORD": "wheel-test-readonly",
            "PYTHONNOUSERSITE": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
    )
    where = subprocess.run(
        [
            str(bin_dir / "python"),
            "-c",
            "import stream_apps, tapeflow_notify, numpy; print(stream_apps.__file__); print(numpy.__file__)",
        ],
        cwd=run_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert where.returncode == 0, where.stderr
    ours, numpy_file = where.stdout.split()
    assert ours.startswith(str(venv)), f"tapeflow imported from {ours}, not from the wheel"
    assert numpy_file.startswith(str(workdir / "deps")), numpy_file

    services = tapeflow_services()
    running: list[Service] = []

    def start(name: str, argv: list[str]) -> Service:
        assert argv[0] == "tapeflow", argv
        service = Service(name, argv[1:], env, workdir, command=(str(bin_dir / "tapeflow"),), cwd=run_dir)
        running.append(service)
        return service

    try:
        # init: compose's own command line, to completion
        init = services.pop("init")
        res = subprocess.run(init["command"], cwd=run_dir, env=env, capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, f"init failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
        assert "applied" in res.stdout and "created" in res.stdout
        with psycopg.connect(database) as conn:
            assert conn.execute("SELECT count(*) FROM trades").fetchone()[0] == 0  # the tables exist

        fake = start(
            "fake-exchange",
            [
                "tapeflow",
                "fake-exchange",
                "--synthetic-seed",
                "3",
                "--synthetic-symbols",
                "BTCUSDT,ETHUSDT",
                "--synthetic-duration",
                "3600",
                # a sparse feed (the default is 5 trades/s, depth every 100 ms and book tickers per
                # symbol): the producer, engine and sink only have to run from the wheel and answer
                # /health, which one trade a second and a book every 2 s (fresh by the engine's 10 s
                # limit) let them do; the default density kept all of them busy for the whole test
                # (and the fake generated 3 × more frames before it answered)
                "--synthetic-trades-per-s",
                "1",
                "--synthetic-depth-interval-ms",
                "2000",
                "--synthetic-no-book-ticker",
                "--speed",
                "1",
            ],
        )
        urls = json.loads(fake.wait_for_line(r'\{"ws_url".*\}', 60).group(0))
        ws_url, rest_url = urls["ws_url"], urls["rest_url"]

        ports = {}
        for name, service in services.items():
            argv = list(service["command"])
            port = free_port()
            if name == "ui":  # no metrics port: the UI listens on TAPEFLOW_UI_PORT, here a free one
                argv += ["--port", str(port)]
            else:
                argv[argv.index("--metrics-port") + 1] = str(port)
            if name == "producer":  # the local fake exchange instead of Binance
                argv += ["--ws-url", ws_url, "--rest-url", rest_url, "--spot-url", rest_url, "--coinbase-url", rest_url]
            ports[name] = (port, service, start(name, argv))
        for name, (port, service, process) in ports.items():
            if name in OFFLINE_VENUES:  # no fake of their websockets here: running, and saying so
                wait_answering(process, port, 180)
                body = _health_body(f"http://127.0.0.1:{port}/health")
                assert body.get("status") in ("starting", "unreachable", "reconnecting"), (name, body)
                continue
            if name == "ui":
                wait_ui_healthy(process, port, workdir / "home" / "secrets" / "ui-token", 180)
            else:
                wait_healthy(process, port, 180)
            # compose's healthcheck command, with this run's port, from the clean virtualenv
            check = service["healthcheck"]["test"][1:]
            check = [
                bin_dir / "python"
                if a == "python"
                else a.replace(re.search(r"localhost:(\d+)", a).group(0), f"127.0.0.1:{port}")
                if "localhost:" in a
                else a
                for a in check
            ]
            # 120 s: compose's own check has no timeout of ours; in the suite at load 15 a fresh Python
            # plus the service's answer took more than 30 s once
            res = subprocess.run(
                [str(a) for a in check], cwd=run_dir, env=env, capture_output=True, text=True, timeout=120
            )
            assert res.returncode == 0, f"{name}: compose healthcheck failed: {res.stderr}"
        assert set(ports) == {
            "producer",
            "engine",
            "sink",
            "executor",
            "notifier",
            "watchlist",
            "ui",
            "labels",
            "guardrail",
            *OFFLINE_VENUES,
        }
    finally:
        for service in running:
            if service.proc.poll() is None:
                service.proc.send_signal(signal.SIGTERM)
        for service in running:
            try:
                service.proc.wait(30)
            except subprocess.TimeoutExpired:
                service.kill()
