"""`tapeflow up/status/down` end to end, as a user runs them: real Kafka, real PostgreSQL, real processes.

The checks that only look at a running stack share one (`test_up_status_down_lifecycle`'s, which also
replays the recording through the pipeline); each test that kills or crashes a part of its stack starts
its own, with the services it looks at (`up --only`: the broker and the database always run; a full
stack took ~20 CPU-s to start and stop, the broker, database and sink ~10). The tests that do not look
at the web UI run without it (`TAPEFLOW_UI=false`: one service less to start, probe and stop; the UI's
own start, token and stop are `test_up_status_down_lifecycle`'s). While they wait (healthy, a replay
finished, trades stored) they ask the stack's status in this process (`tests.support.stack_cli`, what
`tapeflow status` computes; each command costs ~1.5 CPU-s) and the database directly, and run the
commands themselves for what they assert about them."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.support import secret_search
from tests.support.paths import RECORDING
from tests.support.secret_search import MARKERS
from tests.support.stack_cli import cli, components, status_report, stored_trades, wait_for

pytestmark = pytest.mark.integration

#: the stacks of the tests that do not look at the web UI
NO_UI = {"TAPEFLOW_UI": "false"}
#: a stack to crash and stop: the broker, the database and one of tapeflow's own services (a consumer of both)
BROKER_DATABASE_SINK = ("--only", "sink")


def wait_healthy(home: Path, timeout_s: float = 90.0, env_extra: dict[str, str] | None = None) -> None:
    """Until the stack is healthy, by what `status` reports (asked in this process every 0.5 s). `up`
    returns once the engine answers, not once it runs: on Kafka its group join (after a crash, the old
    member's session timeout first) and its transactional producers' fencing take seconds more, during
    which `status` says "starting" and exits 1. Fails with the components that stayed unhealthy."""
    deadline = time.monotonic() + timeout_s
    while True:
        report = status_report(home, env_extra)
        if report["healthy"]:
            return
        if time.monotonic() >= deadline:
            unhealthy = [c for c in report["components"] if not c["healthy"]]
            pytest.fail(f"the stack was not healthy within {timeout_s:.0f} s: {unhealthy}")
        time.sleep(0.5)


def recorded_pids(home: Path) -> dict[str, int]:
    out = {}
    for f in (home / "run").glob("*.json"):
        out[f.stem] = json.loads(f.read_text())["pid"]
    return out


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture
def home():
    # outside pytest's basetemp: pytest resets /tmp/pytest-of-<user> to mode 0700 when another pytest
    # starts, and the unprivileged PostgreSQL user then loses its way to the data directory
    import shutil
    import tempfile

    h = Path(tempfile.mkdtemp(prefix="tapeflow-lifecycle-")) / "home"
    yield h
    cli(h, "down")  # never leave a stack behind, whatever the test did
    for pid in recorded_pids(h).values() if (h / "run").exists() else []:
        assert not alive(pid)
    shutil.rmtree(h.parent, ignore_errors=True)


def test_up_status_down_lifecycle(home):
    """A whole stack replaying the recording (at 10x): healthy, the UI behind its token, a second `up`
    refused, the topics served, the replay through the pipeline into the database
    (`assert_the_replay_ran_the_pipeline`, once a test of its own with a stack of its own), least
    exposure, no secret in anything it said, stored or wrote (`tests.support.secret_search`, with marker
    secrets in its environment; once a test of its own with a stack of its own), then `down` stops every
    process."""
    t0 = time.monotonic()
    res = cli(home, "up", "--detach", "--source", f"replay:{RECORDING}", "--replay-speed", "10", env_extra=MARKERS)
    startup = time.monotonic() - t0
    assert res.returncode == 0, res.stdout + res.stderr
    assert "stack healthy in" in res.stdout
    print(f"up --detach to healthy: {startup:.1f}s")

    wait_healthy(home)
    st = cli(home, "status", "--json")
    assert st.returncode == 0, st.stdout + st.stderr
    by_name = {c["name"]: c for c in json.loads(st.stdout)["components"]}
    for name in ("supervisor", "broker", "database", "migrations", "topics", "fake-exchange", "producer"):
        assert by_name[name]["healthy"], by_name[name]
    assert by_name["broker"]["address"].startswith("127.0.0.1:")
    # the broker line: Kafka's version and log size, and how far back md.trades goes (or that it is empty)
    assert re.search(
        r"Apache Kafka [\d.]+, .*log [\d.]+ MB; md\.trades (since \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC|empty)",
        by_name["broker"]["detail"],
    ), by_name["broker"]
    assert by_name["database"]["pid"] and by_name["database"]["uptime_s"] >= 0

    text = cli(home, "status")
    assert text.returncode == 0 and "broker" in text.stdout and "config (secrets masked)" in text.stdout
    assert_ui_needs_its_token(home, res.stdout, by_name["ui"])

    # a second up refuses instead of starting twice (both modes)
    again = cli(home, "up", "--detach")
    assert again.returncode == 1 and "already running" in again.stdout + again.stderr
    fg = cli(home, "up")
    assert fg.returncode == 1 and "already running" in fg.stdout + fg.stderr

    # the broker really serves the catalogue topics, with the schema-aware CLI
    lst = cli(home, "topics", "list", "--json")
    assert lst.returncode == 0
    names = {json.loads(line)["topic"] for line in lst.stdout.splitlines()}
    assert {"md.trades", "signals", "dlq.md"} <= names
    assert_the_replay_ran_the_pipeline(home)

    pids = recorded_pids(home)
    assert set(pids) >= {"supervisor", "broker", "database"}
    # PostgreSQL children (backends, checkpointer, ...) must go too
    children = [p.pid for p in psutil.Process(pids["database"]).children(recursive=True)]
    assert_least_exposure(home, pids)
    secrets, said = secret_search.said_and_stored(home, cli)

    down = cli(home, "down")
    assert down.returncode == 0, down.stdout + down.stderr
    for pid in list(pids.values()) + children:
        assert not alive(pid), f"pid {pid} survived down"
    assert not list((home / "run").glob("*.json"))
    secret_search.assert_nothing_written(home, secrets, said)

    after = cli(home, "status")
    assert after.returncode == 1
    nothing = cli(home, "down")
    assert nothing.returncode == 0 and "nothing running" in nothing.stdout


def assert_ui_needs_its_token(home: Path, up_output: str, status: dict) -> None:
    """`up --detach` prints the web UI's login URL (the token to the terminal only, never to a log),
    `status` probes the UI with the token, and the UI refuses a request without it."""
    import urllib.error
    import urllib.request

    token = (home / "secrets" / "ui-token").read_text().strip()
    assert status["healthy"] and status["address"].startswith("127.0.0.1:"), status
    assert f"http://{status['address']}/?token={token}" in up_output
    assert token not in "".join(p.read_text(errors="replace") for p in (home / "logs").glob("*.log"))
    printed = cli(home, "ui", "--print-url")
    assert printed.returncode == 0 and printed.stdout.strip() == f"http://{status['address']}/?token={token}"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"http://{status['address']}/api/overview", timeout=10)
    assert refused.value.code == 401
    req = urllib.request.Request(
        f"http://{status['address']}/api/overview", headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.status == 200 and "market" in json.loads(resp.read())


def assert_least_exposure(home: Path, pids: dict[str, int]) -> None:
    """The secure defaults of a running stack: every listening socket of every process it started is on
    loopback, the generated secrets are readable by their owner only, and the database roles the
    services use can do no more than their job (no superuser, no role or database creation; the
    read-only role cannot write)."""
    import psycopg

    listening = []
    for name, pid in pids.items():
        try:  # a replay's producer and fake exchange may have finished
            procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        for proc in procs:
            try:
                conns = proc.net_connections(kind="inet")
            except psutil.NoSuchProcess:
                continue
            listening += [(name, proc.pid, c.laddr.ip, c.laddr.port) for c in conns if c.status == psutil.CONN_LISTEN]
    assert {name for name, *_ in listening} >= {"broker", "database", "sink", "engine", "executor", "ui"}, listening
    assert [entry for entry in listening if entry[2] not in ("127.0.0.1", "::1")] == []
    secrets = home / "secrets"
    assert oct(secrets.stat().st_mode & 0o777) == "0o700"
    files = list(secrets.iterdir())
    assert files and all(oct(f.stat().st_mode & 0o777) == "0o600" for f in files), [
        (f.name, oct(f.stat().st_mode & 0o777)) for f in files
    ]
    address = json.loads((home / "run" / "database.json").read_text())["address"]
    host, port = address.rsplit(":", 1)
    owner = psycopg.conninfo.make_conninfo(
        host=host,
        port=port,
        user="postgres",
        dbname="tapeflow",
        password=(secrets / "postgres-postgres").read_text().strip(),
    )
    with psycopg.connect(owner) as conn:
        roles = dict(
            conn.execute(
                "SELECT rolname, (rolsuper OR rolcreaterole OR rolcreatedb OR rolreplication "
                "OR rolbypassrls) FROM pg_roles WHERE rolname LIKE 'tapeflow_%'"
            ).fetchall()
        )
    assert roles == {"tapeflow_writer": False, "tapeflow_readonly": False}
    readonly = psycopg.conninfo.make_conninfo(
        host=host,
        port=port,
        user="tapeflow_readonly",
        dbname="tapeflow",
        password=(secrets / "postgres-tapeflow_readonly").read_text().strip(),
    )
    with psycopg.connect(readonly) as conn:
        conn.execute("SELECT count(*) FROM trades")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM trades")


def test_port_conflict_is_reported_clearly(home):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        res = cli(home, "up", "--detach", env_extra={"TAPEFLOW_BROKER_PORT": str(port)})
    assert res.returncode != 0
    out = res.stdout + res.stderr
    assert f"127.0.0.1:{port} is already in use" in out and "TAPEFLOW_BROKER_PORT" in out
    assert "Traceback" not in out
    time.sleep(0.5)
    assert not [p for p in recorded_pids(home).values() if alive(p)]


def test_stale_pid_files_and_orphans_after_a_crash(home):
    up = cli(home, "up", "--detach", *BROKER_DATABASE_SINK, env_extra=NO_UI)
    assert up.returncode == 0, up.stdout + up.stderr
    pids = recorded_pids(home)
    # the supervisor dies without cleaning up: its services become orphans with pid files
    os.kill(pids["supervisor"], signal.SIGKILL)
    wait_for(lambda: not alive(pids["supervisor"]), 10, "the killed supervisor was still there", every_s=0.05)
    st = cli(home, "status", "--json", env_extra=NO_UI)
    report = json.loads(st.stdout)
    assert st.returncode == 1 and not {c["name"]: c for c in report["components"]}["supervisor"]["healthy"]

    res = cli(home, "up", "--detach", *BROKER_DATABASE_SINK, env_extra=NO_UI)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "orphaned" in res.stdout or "stale" in res.stdout
    for name in ("broker", "database", "sink"):
        assert not alive(pids[name]), f"orphaned {name} was not stopped"
    wait_healthy(home, env_extra=NO_UI)
    assert cli(home, "down").returncode == 0

    # a pid file pointing at a dead process is reported as stale and removed by down
    (home / "run").mkdir(exist_ok=True)
    (home / "run" / "broker.json").write_text(
        json.dumps(
            {
                "name": "broker",
                "pid": 999999,
                "create_time": 1.0,
                "address": "127.0.0.1:1",
                "started_at": 1.0,
                "log": "x",
                "extra": {},
            }
        )
    )
    st = cli(home, "status", "--json")
    broker = {c["name"]: c for c in json.loads(st.stdout)["components"]}["broker"]
    assert broker["state"] == "stale" and "stale pid file" in broker["detail"]
    down = cli(home, "down")
    assert "stale pid file" in down.stdout and not (home / "run" / "broker.json").exists()


def test_supervisor_restarts_a_crashed_service(home):
    # the broker's clients (the consumers that must not be restarted, the producer whose records must
    # survive); labels and guardrail are left out, as nothing here looks at them
    up = cli(home, "up", "--detach", "--only", "sink,engine,executor,producer", env_extra=NO_UI)
    assert up.returncode == 0, up.stdout + up.stderr
    broker_pid = recorded_pids(home)["broker"]
    before = recorded_pids(home)
    broker_address = json.loads((home / "run" / "broker.json").read_text())["address"]
    described = cli(home, "topics", "describe", "md.trades", "--json")
    assert described.returncode == 0, described.stderr
    records_before = json.loads(described.stdout)["messages"]
    os.kill(broker_pid, signal.SIGKILL)
    # Kafka's log is on disk: the restarted broker has every topic, record, offset and group again, and
    # its clients reconnect by themselves (nothing else is restarted). Polled from the log file, the
    # status asked only once the topics step ran again
    deadline = time.monotonic() + 90
    report: dict = {}
    while time.monotonic() < deadline:
        log_text = (home / "logs" / "supervisor.log").read_text()
        after_kill = log_text.split("exited with code -9", 1)[-1] if "exited with code -9" in log_text else ""
        if re.search(r"topics +\d+ created", after_kill):
            report = status_report(home, NO_UI)
            if report["healthy"]:
                break
        time.sleep(0.5)
    else:
        pytest.fail(
            "broker was not restarted to a healthy stack within 90 s:\n"
            + (home / "logs" / "supervisor.log").read_text()
            + f"\nlast status: {report}"
        )
    assert cli(home, "status", env_extra=NO_UI).returncode == 0  # the command says so too
    log = cli(home, "logs", "supervisor").stdout
    after_kill = log.split("exited with code -9", 1)[1]
    assert "restarting" in log and re.search(r"topics +0 created", after_kill), after_kill
    after = recorded_pids(home)
    assert after["broker"] != broker_pid
    # same address: tools pointed at the broker keep working
    assert json.loads((home / "run" / "broker.json").read_text())["address"] == broker_address
    for name in ("sink", "engine", "executor"):
        assert after[name] == before[name], name
    described = cli(home, "topics", "describe", "md.trades", "--json")
    assert described.returncode == 0, described.stderr
    assert json.loads(described.stdout)["messages"] >= records_before  # nothing lost with the broker


def test_foreground_up_stops_everything_on_ctrl_c(home):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAPEFLOW_")}
    env.update(TAPEFLOW_HOME=str(home), TAPEFLOW_SOURCE=f"replay:{RECORDING}", **NO_UI)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tapeflow", "up", *BROKER_DATABASE_SINK],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    lines = []
    deadline = time.monotonic() + 180  # a hang guard: the supervisor bounds each start
    for line in proc.stdout:
        lines.append(line)
        if "stack healthy in" in line or time.monotonic() > deadline:
            break
    assert any("stack healthy in" in ln for ln in lines), "".join(lines)
    pids = recorded_pids(home)
    proc.send_signal(signal.SIGINT)
    rest = proc.communicate(timeout=60)[0]
    assert proc.returncode == 0, rest
    assert "database   terminated" in rest and "broker     terminated" in rest and "sink       terminated" in rest
    for pid in pids.values():
        assert not alive(pid)


def assert_the_replay_ran_the_pipeline(home: Path) -> None:
    """The offline replay ends cleanly: the producer finished with nothing undelivered (a healthy stack),
    every recorded trade is on md.trades once, and the sink stored them, complete by `db audit`."""
    wait_for(
        lambda: components(home, MARKERS, ("producer",))["producer"]["state"] == "finished",
        60,
        "the replay had not finished",
    )
    st = cli(home, "status", "--json")
    producer = {c["name"]: c for c in json.loads(st.stdout)["components"]}["producer"]
    assert producer["state"] == "finished" and producer["healthy"], producer
    assert "replay-finished" in producer["detail"] and "0 undelivered" in producer["detail"]
    assert st.returncode == 0  # a finished replay is a healthy stack

    tail = cli(home, "topics", "tail", "md.trades", "--from-beginning", "--timeout", "3", "--json")
    agg = [json.loads(line)["value"] for line in tail.stdout.splitlines()]
    frames = [line for line in (RECORDING / "ws_frames.txt").read_text().splitlines() if "@aggTrade" in line]
    assert len(agg) == len(frames) - 1  # minus the URL line, which names every stream
    assert len({(t["symbol"], t["agg_id"]) for t in agg}) == len(agg)

    # ...and the sink copied them into the database, where the audit finds them complete
    sushi = sum(1 for t in agg if t["symbol"] == "SUSHIUSDT")
    wait_for(lambda: stored_trades(home, "SUSHIUSDT") >= sushi, 30, f"the sink had not stored {sushi} trades")
    res = cli(home, "db", "audit", "--symbol", "SUSHIUSDT", "--from", "2021-07-22", "--to", "2021-07-24", "--json")
    report = json.loads(res.stdout)
    assert res.returncode == 0 and report["ok"], report["problems"]
    assert report["trades"]["rows"] == sushi and report["trades"]["gaps"] == []
