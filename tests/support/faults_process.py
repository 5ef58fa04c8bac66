"""Process faults for the fault suite: each case runner starts what it needs, injects one fault,
lets it clear and returns a row for `benchmarks/bench_faults.py`:

    {fault, duration_s, trades_in, trades_out, duplicates, lost, orders_sent, orders_expected, recover_s}

plus a ``detail`` dict the tests assert on (the benchmark prints only the row). Tests call the runners
with short faults; the benchmark with long ones. The runners take a Kafka bootstrap and a work
directory (every file they write is under it).

Cases here:
- `executor_clock_skew`: the executor (testnet mode, real `BinanceBroker`) against the fake exchange
  with its wall clock skewed (`tests.support.skewed_clock`): started behind the exchange by
  more than recvWindow, then stepped ahead (as an NTP step or a resumed VM would). The fake answers
  -1021 to a request outside recvWindow; the executor must resync its offset from `/fapi/v1/time` and
  resend with the same client order id, so the exchange places every order exactly once.
- `stack_process_faults`: one live stack, three faults in turn: engine and sink SIGSTOPped past the
  consumer session timeout; the sink's PostgreSQL backend SIGKILLed mid-statement (crash recovery of
  the cluster); the database SIGSTOPped (unresponsive: connections open, no answers, as behind a
  network that drops packets, which this kernel cannot do without netem).
The disk-full cases are in `tests.support.faults_disk`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from execution.client_ids import client_order_id
from execution.safety import LIVE_OPT_IN_ENV, LIVE_OPT_IN_VALUE
from fake_exchange.orders import TEST_API_KEY, TEST_API_SECRET
from tapeflow.stack.app_services import http_json
from tapeflow_runtime.kafka_client import consumer_config, ensure_topics
from tests.support.executor_io import Feed, Watcher, free_port
from tests.support.fake_exchange import FakeOnThread
from tests.support.paths import REPO
from tests.support.waiting import poll

ROW_KEYS = (
    "fault",
    "duration_s",
    "trades_in",
    "trades_out",
    "duplicates",
    "lost",
    "orders_sent",
    "orders_expected",
    "recover_s",
)


def row(fault: str, **values: Any) -> dict[str, Any]:
    """A result row: every column of ROW_KEYS (None where it does not apply) plus ``detail``."""
    out: dict[str, Any] = {key: values.pop(key, None) for key in ROW_KEYS}
    out["fault"] = fault
    out["detail"] = values.pop("detail", {})
    assert not values, f"unknown row columns {sorted(values)}"
    return out


# ================================================================ executor clock skew
EXECUTOR_RUNNER = """
import asyncio, os, sys
if os.environ.get("SKEWED_CLOCK_FILE"):
    from tests.support.skewed_clock import install
    install(os.environ["SKEWED_CLOCK_FILE"])
from pathlib import Path
from execution.service import ExecuteOptions, run_executor
from tapeflow_runtime.logs import configure_logging
from tapeflow_runtime.settings import Settings
settings = Settings()
configure_logging(settings.log_level, settings.log_format)
options = ExecuteOptions(config_path=Path(sys.argv[1]), start_from="earliest", restore_idle_s=0.3,
                         metrics_port=int(sys.argv[2]))
sys.exit(asyncio.run(run_executor(settings, "testnet", options)))
"""
EXECUTOR_GROUP = "tapeflow-executor-testnet"
SYM = "BTCUSDT"


def _health(port: int) -> dict | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
            return json.loads(resp.read())
    except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError):
        return None


def _clock_offset_applied(port: int, skew_s: float) -> bool:
    """True once the process serving ``port`` answers with a `Date` header ``skew_s`` off this
    process's clock (the header has whole seconds: 1.5 s of slack, well under a 3-s step)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
            served = parsedate_to_datetime(resp.headers["Date"]).timestamp()
    except (urllib.error.URLError, ConnectionError, TimeoutError, TypeError, ValueError):
        return False
    return abs(served - (time.time() + skew_s)) < 1.5


def _wait_running(port: int, proc: subprocess.Popen, log_path: Path, timeout: float = 60.0) -> dict:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(f"executor exited {proc.returncode}\n{log_path.read_text()[-4000:]}")
        body = _health(port)
        if body and body.get("status") == "running":
            return body
        time.sleep(0.1)
    raise AssertionError(f"executor not running within {timeout}s\n{log_path.read_text()[-4000:]}")


def _wait_committed(bootstrap: str, group: str, topic: str, count: int, timeout: float = 60.0) -> int:
    """Until `group` has committed `count` records of `topic` (summed over its partitions), asked every
    0.1 s by one client (each answer is the broker's; a new client per question cost more than it)."""
    c = Consumer(consumer_config(bootstrap, group))
    try:
        md = c.list_topics(topic, timeout=10).topics[topic]
        parts = [TopicPartition(topic, p) for p in md.partitions]
        end = time.monotonic() + timeout
        while True:
            done = sum(max(tp.offset, 0) for tp in c.committed(parts, timeout=10))
            if done >= count or time.monotonic() > end:
                return done
            time.sleep(0.1)
    finally:
        c.close()


def _skew_spec(seconds: float) -> str:
    """The clock file's relative offset, e.g. ``-7s``, ``+4.5s`` (`skewed_clock.parse_offset`)."""
    return f"{seconds:+g}s"


def executor_clock_skew(
    bootstrap: str, workdir: Path, *, start_skew_s: float = -7.0, step_s: float = 2.0, recover_timeout_s: float = 30.0
) -> dict[str, Any]:
    """The testnet executor with its wall clock skewed, started `start_skew_s` off the exchange's clock (its
    start-up sync must absorb that), then stepped forward by `step_s` twice:

    1. holding the position of signal 1, then the price crosses its stop: the first signed request after
       the step (the stop-loss exit, or a periodic reconciliation that got there first) is refused with
       -1021, and the executor must resync and resend it (an order: same client order id);
    2. flat: the periodic reconciliation (every 2 s) is refused first; it must resync too, or it keeps
       failing and blocks every entry with nothing left to resync the clock. Signal 2 must then trade.

    Only the wall clock steps (as NTP steps it); the monotonic clock and the Kafka client's clocks
    run on. ``duration_s`` is the skew absorbed at start (|start_skew_s|);
    ``recover_s`` the longest time from a step to its order or entry done. Orders: every client id the
    executor emitted an intent for must be placed exactly once at the exchange."""
    workdir.mkdir(parents=True, exist_ok=True)
    prefix = f"skew{uuid.uuid4().hex[:8]}."
    ensure_topics(bootstrap, prefix=prefix)
    group = f"{prefix}{EXECUTOR_GROUP}"
    clock_file = workdir / "clock-offset"
    skew = start_skew_s
    clock_file.write_text(_skew_spec(skew) + "\n")
    (workdir / "key").write_text(TEST_API_KEY)
    (workdir / "secret").write_text(TEST_API_SECRET)
    t0 = time.monotonic()
    phases: dict[str, float] = {}

    def mark(name: str) -> None:
        phases[name] = round(time.monotonic() - t0, 2)

    fake = FakeOnThread()
    feed = Feed(bootstrap, prefix)
    watcher = Watcher(bootstrap, prefix, ["orders", "fills", "positions", "risk.events"])
    proc: subprocess.Popen | None = None
    log_path = workdir / "executor.log"
    refused_at: list[int] = []  # len(state["refused"]) when each step was made
    recover: list[float] = []
    trades_in = 0

    def step() -> float:
        nonlocal skew
        refused_at.append(len(fake.control("state")["refused"]))
        skew += step_s
        clock_file.write_text(_skew_spec(skew) + "\n")
        # until the executor's HTTP `Date` header (its own wall clock, to the second) shows it
        # (a clock never stepped shows in the row: no request refused after the step)
        poll(lambda: _clock_offset_applied(port, skew), 15)
        return time.monotonic()

    try:
        fake.market(bid=49999.9, ask=50000.0, price=50000.0, qty=0.0, mark=50000.0)
        config = workdir / "executor.yaml"
        # taker entries: the row counts one order per entry (entry1, entry2) and one exit
        config.write_text(
            f"exchange:\n  rest_url: {fake.rest_url}\n  ws_url: {fake.ws_url}\n  request_timeout_s: 5\n"
            "  probe_interval_s: 0.5\nreconcile:\n  orphans: flatten\n  interval_s: 2\n"
            "  retry_s: 0.5\nentry:\n  kind: taker\n"
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("TAPEFLOW_")}
        env.update(
            {
                "PYTHONPATH": str(REPO),
                "TAPEFLOW_HOME": str(workdir),
                "TAPEFLOW_BROKER": bootstrap,
                "TAPEFLOW_TOPIC_PREFIX": prefix,
                "TAPEFLOW_BINANCE_API_KEY_FILE": str(workdir / "key"),
                "TAPEFLOW_BINANCE_API_SECRET_FILE": str(workdir / "secret"),
                LIVE_OPT_IN_ENV: LIVE_OPT_IN_VALUE,
                # the offset is read from the file, so the runner can step the clock of the running
                # process (`tests.support.skewed_clock`: why not libfaketime)
                "SKEWED_CLOCK_FILE": str(clock_file),
            }
        )
        port = free_port()
        with open(log_path, "wb") as log_file:
            proc = subprocess.Popen(
                [sys.executable, "-c", EXECUTOR_RUNNER, str(config), str(port)],
                cwd=workdir,
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        _wait_running(port, proc, log_path)
        mark("running")

        feed.trade(50000.0)
        trades_in += 1
        sig1 = feed.signal(price=50000.0, risk=500.0)  # stop at 49,500
        watcher.wait("positions", lambda p: p["signal_id"] == sig1["signal_id"] and p["event"] == "opened", timeout=60)
        mark("entry1")
        refused_before = len(fake.control("state")["refused"])

        # --- step 1, holding: the stop-loss exit is sent into the stepped clock ---------------------------
        stepped = step()
        fake.market(price=49400.0, qty=0.0)  # below the stop: the exit fills here
        feed.trade(49400.0)
        trades_in += 1
        closed = watcher.wait(
            "positions",
            lambda p: p["signal_id"] == sig1["signal_id"] and p["event"] == "closed",
            timeout=recover_timeout_s,
        )
        recover.append(time.monotonic() - stepped)
        mark("exit")

        # --- step 2, flat: the periodic reconciliation meets it first --------------------------------------
        stepped = step()
        end = time.monotonic() + 10
        while len(fake.control("state")["refused"]) == refused_at[-1] and time.monotonic() < end:
            time.sleep(0.1)
        mark("step2_refused")
        feed.trade(49400.0)
        trades_in += 1
        sig2 = feed.signal(price=49400.0, risk=400.0)
        opened2 = None
        with contextlib.suppress(AssertionError):
            opened2 = watcher.wait(
                "positions",
                lambda p: p["signal_id"] == sig2["signal_id"] and p["event"] == "opened",
                timeout=recover_timeout_s,
            )
            recover.append(time.monotonic() - stepped)
        mark("entry2")
        trades_out = _wait_committed(bootstrap, group, prefix + "md.trades", trades_in, timeout=15)
        watcher.pump(0.5)
        health = _health(port) or {}
    finally:
        if proc is not None and proc.poll() is None:  # outputs checked already: no clean stop needed
            proc.kill()
            proc.wait(10)
        state = None
        with contextlib.suppress(Exception):
            state = fake.control("state")
        fake.stop()
        watcher.close()
    mark("stopped")

    log_text = log_path.read_text(errors="replace")
    placements: dict[str, int] = state["placements"] if state else {}
    refused = [tuple(r) for r in state["refused"]] if state else []
    intents = sorted({o["client_order_id"] for o in watcher.seen["orders"]})
    posts = Counter(c for m, c in state["order_requests"] if m == "POST") if state else Counter()
    order_states = {cid: [o["state"] for o in watcher.seen["orders"] if o["client_order_id"] == cid] for cid in intents}
    blocked = [(r["reason"], r["scope"]) for r in watcher.seen["risk.events"] if r["decision"] == "block"]
    return row(
        "executor_clock_skew",
        duration_s=abs(start_skew_s),
        trades_in=trades_in,
        trades_out=trades_out,
        duplicates=sum(n - 1 for n in placements.values() if n > 1),
        lost=sum(1 for cid in intents if placements.get(cid, 0) == 0),
        orders_sent=sum(placements.values()),
        orders_expected=len(intents),
        recover_s=round(max(recover), 2) if opened2 else None,
        detail={
            "placements": placements,
            "posts": dict(posts),
            "intents": intents,
            "order_states": order_states,
            "refused_before_steps": refused[:refused_before],
            "refused_step1": refused[refused_at[0] : refused_at[1]] if len(refused_at) > 1 else [],
            "refused_step2": refused[refused_at[1] :] if len(refused_at) > 1 else [],
            "entry1": client_order_id(sig1["signal_id"], "entry"),
            "entry2": client_order_id(sig2["signal_id"], "entry"),
            "entry2_opened": opened2 is not None,
            "closed": closed,
            "blocked": blocked,
            "health": health,
            "phases": phases,
            "resyncs_logged": log_text.count("clock offset resynced"),
            "log_tail": log_text[-3000:],
        },
    )


# ================================================================ stack: SIGSTOP of consumers, database killed
def _statuses(stack, names: tuple[str, ...]) -> dict[str, tuple[bool, str]]:
    from tapeflow.stack.supervisor import stack_status

    return {c.name: (c.healthy, c.detail) for c in stack_status(stack.sup.settings, stack.sup.paths, names=names)}


def session_played(stack) -> str:
    """How far the fake exchange has played its session, e.g. ``"812/2540 frames"`` or ``"finished"``:
    in the detail at each fault, as evidence that it landed while trades flowed."""
    fake = next(s for s in stack.sup.services if s.name == "fake-exchange")
    code, body = http_json(f"http://127.0.0.1:{fake.rest_port}/_control/status")
    if code != 200:
        return f"HTTP {code}"
    return "finished" if body.get("finished") else f"{body.get('position')}/{body.get('frames_total')} frames"


def _health_url(stack, name: str) -> str:
    from tapeflow_runtime.process_records import ProcessRecord

    record = ProcessRecord.load(stack.sup.paths.state_file(name))
    assert record is not None, f"no run record of {name}"
    return record.extra["health_url"]


def _features_stored(stack) -> int:
    return stack.query("SELECT count(*) FROM features")[0][0]


def _sink_backends(stack) -> list[tuple[int, str, str]]:
    """(pid, user, state) of the client backends other than this query's own."""
    return [
        tuple(r)
        for r in stack.query(
            "SELECT pid, usename, coalesce(state, '') FROM pg_stat_activity WHERE backend_type = 'client backend' "
            "AND pid <> pg_backend_pid() AND usename <> current_user"
        )
    ]


#: services of `tapeflow up` that the process faults and their checks do not touch (none of them is in
#: the trades' or the features' path): left out of the stack, which then starts and stops sooner
UNTOUCHED = ("labels", "guardrail", "ui")


def stack_process_faults(
    home: Path,
    *,
    stop_s: float = 8.0,
    kill_db: bool = True,
    db_stall_s: float = 5.0,
    duration_s: float = 45.0,
    trades_per_s: float = 40.0,
    symbol: str = "BTCUSDT",
) -> list[dict[str, Any]]:
    """One live stack (`tests.support.endurance.live_stack`: supervisor, Kafka, PostgreSQL, sink, engine,
    paper executor, the producer live against the fake exchange playing a synthetic session), two faults:

    1. ``sigstop_engine_sink``: engine and sink SIGSTOPped (whole process groups) for `stop_s`, longer
       than the consumer session timeout (6 s), so their groups rebalance them away; `tapeflow status`
       must show both unhealthy meanwhile; then SIGCONT. ``recover_s``: SIGCONT to the next feature
       stored (engine and sink both working again).
    2. ``db_backend_killed`` (`kill_db`): the sink's PostgreSQL backend SIGKILLed, preferably inside a
       transaction, which makes the postmaster reset every connection and run crash recovery. The sink
       must reconnect. ``recover_s``: kill to the next trade stored.
    3. ``db_unresponsive`` (`db_stall_s` > 0): the PostgreSQL process group SIGSTOPped for `db_stall_s`:
       connections stay open but nothing answers, as over a network that drops every packet (this
       kernel has no netem); `tapeflow status` must show the database down meanwhile. ``recover_s``:
       SIGCONT to the next trade stored.

    At the end every trade of the session must be in md.trades and in the trades table exactly once
    (by agg id), and the features and signals topics must carry no id twice. Both rows carry the whole
    run's accounting (the faults share it). ``duration_s`` of the killed-backend row: how long the database
    refused connections (crash recovery)."""
    from fake_exchange.synthetic import SyntheticSpec
    from tests.support.endurance import expected_trades, live_stack

    spec = SyntheticSpec(
        seed=23, symbols=(symbol,), duration_s=duration_s, trades_per_s=trades_per_s, start_time=time.time() + 10
    )  # event times; the exchange plays from the subscription
    count, first, last = expected_trades(spec)[symbol]
    detail: dict[str, Any] = {"expected": (count, first, last), "phases": {}}
    t0 = time.monotonic()
    db_down_s = recover_db = recover_stall = None
    # the session dated from the exchange's launch (`SyntheticExchange`): its trades flow once the stack is
    # up, so the faults land in it (dated when the test began, a stack slow to start under load got the
    # whole session at once after it had ended, and nothing was left to resume after the SIGSTOP)
    with live_stack(home, spec, dated_at_launch=True, without=UNTOUCHED) as stack:
        run = _FaultRun(stack, symbol, count, detail, t0)
        flowing = poll(lambda: _features_stored(stack) > 0 and run.stored() > 0, 120, 0.25)
        assert flowing, "the pipeline never stored a feature\n" + "\n".join(stack.log)
        run.mark("flowing")
        detail["status_before"] = poll(run.all_healthy, 30, 0.25) or _statuses(stack, run.watched)
        pids, recover_stop = _sigstop_engine_sink(run, stop_s)
        if kill_db:
            db_down_s, recover_db = _kill_sink_backend(run, pids)
        if db_stall_s:
            recover_stall = _stall_database(run, db_stall_s)
        run.mark("faults_done")
        poll(lambda: run.stored() >= count, duration_s + 180, 0.5)
        run.mark("all_stored")
        time.sleep(1.0)  # a duplicate would come with the last batches
        outcome = _read_outcome(run)
    common = _accounting(outcome, detail, count, first, last)
    rows = [
        row("sigstop_engine_sink", duration_s=detail["stopped_for_s"], recover_s=recover_stop, detail=detail, **common)
    ]
    if kill_db:
        rows.append(row("db_backend_killed", duration_s=db_down_s, recover_s=recover_db, detail=detail, **common))
    if db_stall_s:
        rows.append(
            row(
                "db_unresponsive",
                duration_s=detail["db_stalled_for_s"],
                recover_s=recover_stall,
                detail=detail,
                **common,
            )
        )
    return rows


@dataclass
class _FaultRun:
    """The live stack of `stack_process_faults`, what its session plays (one symbol, `count` trades) and
    the ``detail`` record the faults fill in turn (``phases``: seconds from `t0` to each step)."""

    stack: Any
    symbol: str
    count: int
    detail: dict[str, Any]
    t0: float
    watched: tuple[str, ...] = ("engine", "sink")

    def mark(self, name: str) -> None:
        self.detail["phases"][name] = round(time.monotonic() - self.t0, 1)

    def stored(self) -> int:
        """Trades of the symbol in the trades table."""
        return self.stack.trades_stored(self.symbol)[0]

    def stored_past(self, before: int) -> bool:
        """More trades stored than `before`, or all of them: the sink writes again."""
        return (n := self.stored()) > before or n >= self.count

    def all_healthy(self) -> dict[str, tuple[bool, str]] | None:
        statuses = _statuses(self.stack, self.watched)
        return statuses if all(ok for ok, _ in statuses.values()) else None


def _sigstop_engine_sink(run: _FaultRun, stop_s: float) -> tuple[dict[str, int], float | None]:
    """Fault 1: engine and sink SIGSTOPped for `stop_s`. Their pids, and seconds from SIGCONT to the next
    feature stored (None: none within a minute)."""
    stack, detail = run.stack, run.detail
    pids = {name: stack.service_pid(name) for name in run.watched}
    detail["session_at_stop"] = session_played(stack)
    t_stop = time.monotonic()
    for pid in pids.values():
        os.killpg(pid, signal.SIGSTOP)
    try:
        detail["status_stopped"] = _statuses(stack, run.watched)
        time.sleep(max(0.0, stop_s - (time.monotonic() - t_stop)))
    finally:
        for pid in pids.values():
            os.killpg(pid, signal.SIGCONT)
    t_cont = time.monotonic()
    features_at_cont = _features_stored(stack)
    resumed = poll(lambda: _features_stored(stack) > features_at_cont, 60, 0.2)  # the session outlasts this
    recover_stop = round(time.monotonic() - t_cont, 2) if resumed else None
    detail["status_after_stop"] = poll(run.all_healthy, 30, 0.25)
    detail["stopped_for_s"] = round(t_cont - t_stop, 2)
    detail["same_pids_after_stop"] = pids == {name: stack.service_pid(name) for name in run.watched}
    run.mark("sigstop_recovered")
    return pids, recover_stop


def _kill_sink_backend(run: _FaultRun, pids: dict[str, int]) -> tuple[float, float | None]:
    """Fault 2: a database backend of the sink SIGKILLed, one inside a transaction when there is one.
    Seconds the database refused connections, and from the kill to the next trade stored."""
    stack, detail = run.stack, run.detail

    def in_transaction():
        backends = _sink_backends(stack)
        busy = [b for b in backends if b[2] in ("active", "idle in transaction")]
        return busy or None

    busy = poll(in_transaction, 10, 0.01)
    victims = busy or _sink_backends(stack)
    detail["killed_backends"] = victims
    stored_at_kill = run.stored()
    t_kill = time.monotonic()
    for pid, _, _ in victims[:1]:
        os.kill(pid, signal.SIGKILL)

    def accepting():
        try:
            stack.query("SELECT 1")
            return True
        except Exception:  # noqa: BLE001 - any refusal while it recovers
            return False

    poll(lambda: not accepting(), 3, 0.02)  # the reset may take a moment to start
    poll(accepting, 60, 0.1)
    db_down_s = round(time.monotonic() - t_kill, 2)
    moved = poll(lambda: run.stored_past(stored_at_kill), 60, 0.2)
    recover_db = round(time.monotonic() - t_kill, 2) if moved else None
    detail["sink_pid_same_after_db_kill"] = pids["sink"] == stack.service_pid("sink")
    run.mark("db_kill_recovered")
    return db_down_s, recover_db


def _stall_database(run: _FaultRun, stall_s: float) -> float | None:
    """Fault 3: the PostgreSQL process group SIGSTOPped for `stall_s`. Seconds from SIGCONT to the next
    trade stored."""
    stack, detail = run.stack, run.detail
    db_pid = stack.service_pid("database")
    sink_url = _health_url(stack, "sink")
    # the sink healthy first (a writer may still be backing off from the killed backend)
    detail["sink_healthy_before_stall"] = bool(poll(lambda: http_json(sink_url)[0] == 200, 30, 0.25))
    stored_at_stall = run.stored()
    t_stall = time.monotonic()
    os.killpg(db_pid, signal.SIGSTOP)
    try:  # nothing here may query the database without a timeout
        with ThreadPoolExecutor(1) as pool:  # `tapeflow status` takes seconds with the database stopped
            status = pool.submit(_statuses, stack, ("database", "sink"))
            # the sink's own /health meanwhile, for the record: "database-down" once a writer's
            # reconnect timed out, else still "running" (its write waits); not asserted, the
            # database's status is
            while time.monotonic() - t_stall < stall_s:
                code, body = http_json(sink_url)
                if code != 200 and "sink_unhealthy_after_s" not in detail:
                    detail["sink_unhealthy_after_s"] = round(time.monotonic() - t_stall, 1)
                    detail["sink_unhealthy"] = (code, body)
                time.sleep(0.5)
            detail["status_db_stalled"] = status.result()
    finally:
        os.killpg(db_pid, signal.SIGCONT)
    t_resume = time.monotonic()
    detail["db_stalled_for_s"] = round(t_resume - t_stall, 2)
    moved = poll(lambda: run.stored_past(stored_at_stall), 60, 0.2)
    recover_stall = round(time.monotonic() - t_resume, 2) if moved else None
    detail["status_after_stall"] = poll(
        lambda: (st := _statuses(stack, ("database", "sink"))) and all(ok for ok, _ in st.values()) and st,
        30,
        0.25,
    )
    run.mark("db_stall_recovered")
    return recover_stall


@dataclass
class _Outcome:
    """What the run left: the trades table's (rows, distinct, low, high), the ids in the topics, and the
    features table's (rows, distinct ids)."""

    stored: tuple[int, int, int, int]
    topic_trades: list[int]
    feature_ids: list[str]
    signal_ids: list[str]
    db_features: tuple[int, int]


def _read_outcome(run: _FaultRun) -> _Outcome:
    """The stored trades and the topics' ids, with where any duplicate id sits and the logs' evidence."""
    from tests.conftest import _read_topic

    stack, detail = run.stack, run.detail
    stored = stack.trades_stored(run.symbol)
    with ThreadPoolExecutor(3) as pool:
        reads = {
            name: pool.submit(_read_topic, stack.bootstrap, name, idle_s=2.0)
            for name in ("md.trades", "features", "signals")
        }
        topic_trades = [r["value"]["agg_id"] for r in reads["md.trades"].result() if r["value"]["symbol"] == run.symbol]
        features = reads["features"].result()
        signals = reads["signals"].result()
    run.mark("topics_read")
    # where a duplicate id sits (partition, offset), and what the engine logged about its groups
    for name, records, field_name in (("features", features, "evaluation_id"), ("signals", signals, "signal_id")):
        places: dict[str, list[tuple[int, int]]] = {}
        for r in records:
            places.setdefault(r["value"][field_name], []).append((r["partition"], r["offset"]))
        detail[f"{name}_duplicated_at"] = [(i, at) for i, at in places.items() if len(at) > 1][:5]
    engine_log = stack.sup.paths.home / "logs" / "engine.log"
    detail["engine_rebalances"] = [
        line[:240]
        for line in engine_log.read_text(errors="replace").splitlines()
        if any(w in line.lower() for w in ("revoked", "assigned", "restored", "fenced", "transaction", "error"))
    ][-40:]
    db_features = stack.query("SELECT count(*), count(DISTINCT evaluation_id) FROM features")[0]
    detail["log"] = list(stack.log)
    sink_log = stack.sup.paths.home / "logs" / "sink.log"
    detail["sink_log_db_retries"] = sink_log.read_text(errors="replace").count("database unavailable")
    return _Outcome(
        stored,
        topic_trades,
        [r["value"]["evaluation_id"] for r in features],
        [r["value"]["signal_id"] for r in signals],
        db_features,
    )


def _accounting(outcome: _Outcome, detail: dict[str, Any], count: int, first: int, last: int) -> dict[str, Any]:
    """The run's counts into ``detail``; the columns every row of the run shares."""
    rows_n, distinct, _, _ = outcome.stored
    in_topic = Counter(outcome.topic_trades)
    topic_dupes = sum(n - 1 for n in in_topic.values())
    feature_dupes = sum(n - 1 for n in Counter(outcome.feature_ids).values())
    signal_dupes = sum(n - 1 for n in Counter(outcome.signal_ids).values())
    lost = len(set(range(first, last + 1)) - set(in_topic)) + (count - distinct)
    detail.update(
        {
            "stored": outcome.stored,
            "topic_trades": len(outcome.topic_trades),
            "topic_distinct": len(in_topic),
            "topic_dupes": topic_dupes,
            "feature_ids": len(outcome.feature_ids),
            "feature_dupes": feature_dupes,
            "signal_ids": len(outcome.signal_ids),
            "signal_dupes": signal_dupes,
            "db_features": outcome.db_features,
        }
    )
    return {
        "trades_in": count,
        "trades_out": distinct,
        "duplicates": topic_dupes + (rows_n - distinct) + feature_dupes + signal_dupes,
        "lost": lost,
    }
