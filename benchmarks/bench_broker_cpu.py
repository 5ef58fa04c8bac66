"""CPU of the embedded broker and of every stack process, measured from outside (``/proc`` through
psutil), while a two-symbol session plays at 1x and then while the stack is idle.

What a user runs: the stack `tapeflow up` starts (supervisor, Apache Kafka, PostgreSQL, sink, engine,
executor, the live producer against the local fake exchange playing a synthetic BTC/ETH-like session
at its own pace). The session: ``--symbols`` at ``--trades-per-s`` each with BTC-like bursts, depth
diffs every ``--depth-ms`` (Binance's fastest stream is 0 ms, i.e. every event; 10 ms is the fake's
finest), marks every second.

Targets (DESIGN.md section 7): the broker idle <= 1 % of a core and the whole stack idle <= 3 %
(PostgreSQL and the fake exchange excluded); the broker replaying two symbols at 1x is reported
against a 10 % target. The baselines are the former stand-in broker's (before its
changes): broker 23 % replaying, 16.5 % idle, the stack ~26 % idle. The supervisor runs in this
benchmark's process, as in `tapeflow up`'s, and is counted in the stack.

Run: ``.venv/bin/python -m benchmarks.bench_broker_cpu [--minutes 5] [--idle-s 120] [--symbols BTCUSDT,ETHUSDT]
[--attribute-s 20]``; at real rates for the four default symbols: ``--real-rates --minutes 30
--symbols BTCUSDT,ETHUSDT,SOLUSDT,XRPUSDT``
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import psutil

from benchmarks.bench_endurance import process_tree
from fake_exchange.real_history import REAL_RATES
from fake_exchange.synthetic import SyntheticSpec
from tests.support.endurance import live_stack

TARGETS = {"broker replaying": 10.0, "broker idle": 1.0, "stack idle": 3.0}
BASELINE = {"broker replaying": 23.0, "broker idle": 16.5, "stack idle": 26.0}


def tree_cpu(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its live children."""
    total = 0.0
    for p in process_tree(pid):
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:  # exited between the listing and the read: its time is gone with it
            continue
    return total


def sample(stack) -> dict[str, float]:
    """CPU seconds so far of each service's process tree, and of the supervisor: it runs in this
    process (as in `tapeflow up`'s), whose main thread only sleeps and samples while it is measured."""
    cpu = {name: tree_cpu(run.proc.pid) for name, run in stack.sup.running.items()}
    own = psutil.Process().cpu_times()
    cpu["supervisor"] = own.user + own.system
    return cpu


def tree_wakeups(pid: int) -> int:
    """Voluntary context switches of every thread of ``pid`` and its live children: how often the
    process went to sleep and was woken, which is what an idle process's CPU mostly is."""
    total = 0
    for p in process_tree(pid):
        try:
            tasks = list(Path(f"/proc/{p.pid}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                status = (task / "status").read_text()
            except OSError:  # a thread that ended between the listing and the read
                continue
            total += int(status.split("voluntary_ctxt_switches:", 1)[1].split()[0])
    return total


def wakeups(stack) -> dict[str, int]:
    return {name: tree_wakeups(run.proc.pid) for name, run in stack.sup.running.items()}


def shares(before: dict[str, float], after: dict[str, float], seconds: float) -> dict[str, float]:
    """Percent of one core per process over ``seconds`` (processes present at both ends)."""
    return {name: 100.0 * (after[name] - before[name]) / seconds for name in after if name in before}


def report(label: str, pct: dict[str, float]) -> dict[str, float]:
    stack = sum(v for k, v in pct.items() if k not in ("database", "fake-exchange"))
    print(f"== {label}")
    for name, value in sorted(pct.items(), key=lambda kv: -kv[1]):
        print(f"  {name:<16} {value:6.2f} % of a core")
    print(f"  {'stack (no PostgreSQL, no fake exchange)':<16} {stack:6.2f} %")
    return {"broker": pct.get("broker", 0.0), "stack": stack}


def topic_records(home: Path) -> dict[str, int]:
    """Records per logical topic, as `tapeflow topics list --json` counts them (the user's view)."""
    import json
    import os
    import subprocess  # nosec B404 # the project's own CLI
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("TAPEFLOW_")}
    env["TAPEFLOW_HOME"] = str(home)
    out = subprocess.run(
        [sys.executable, "-m", "tapeflow", "topics", "list", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    ).stdout  # nosec B603
    rows = [json.loads(line) for line in out.splitlines()]
    return {r["topic"]: r.get("messages", 0) for r in rows if r.get("catalogue")}


def broker_share(stack, seconds: float) -> float:
    broker = stack.sup.running["broker"].proc.pid
    t0, c0 = time.monotonic(), tree_cpu(broker)
    time.sleep(seconds)
    return 100.0 * (tree_cpu(broker) - c0) / (time.monotonic() - t0)


def attribute(stack, seconds: float) -> None:
    """The idle broker's CPU with each client paused in turn (SIGSTOP of its process tree: its
    connections stay open, it asks nothing), then with all of them paused."""
    import signal

    clients = [n for n in ("engine", "sink", "executor", "producer") if n in stack.sup.running]
    trees = {n: [p for p in process_tree(stack.sup.running[n].proc.pid)] for n in clients}

    def send(names, sig):
        for name in names:
            for p in trees[name]:
                try:
                    p.send_signal(sig)
                except psutil.Error:
                    continue

    print(f"== the idle broker with clients paused ({seconds:.0f} s each)")
    print(f"  none paused        {broker_share(stack, seconds):6.2f} % of a core")
    for name in clients:
        send([name], signal.SIGSTOP)
        try:
            share = broker_share(stack, seconds)
        finally:
            send([name], signal.SIGCONT)
        print(f"  {name + ' paused':<18} {share:6.2f} % of a core")
        time.sleep(3)
    send(clients, signal.SIGSTOP)
    try:
        share = broker_share(stack, seconds)
    finally:
        send(clients, signal.SIGCONT)
    print(f"  {'all paused':<18} {share:6.2f} % of a core (the supervisor's health checks and the broker itself)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=5.0, help="Session length, played at 1x.")
    ap.add_argument("--idle-s", type=float, default=120.0, help="Idle measurement after the session.")
    ap.add_argument("--symbols", default="BTCUSDT,ETHUSDT")
    ap.add_argument("--trades-per-s", type=float, default=20.0, help="Mean aggTrades/s per symbol.")
    ap.add_argument(
        "--real-rates",
        action="store_true",
        help="Each symbol at its real mean rate instead (fake_exchange.real_history.REAL_RATES: "
        "BTC 30, ETH 20, SOL 12, XRP 9 aggTrades/s; the per-service CPU at real rates).",
    )
    ap.add_argument("--depth-ms", type=int, default=10, help="Depth diff interval (10 = the fake's finest).")
    ap.add_argument("--settle-s", type=float, default=60.0, help="Wait after the stack is up before measuring.")
    ap.add_argument(
        "--attribute-s",
        type=float,
        default=0.0,
        help="After the idle measurement: pause (SIGSTOP) each client in turn for this long and "
        "measure the idle broker without it (where its idle CPU comes from); 0 = skip.",
    )
    args = ap.parse_args()
    symbols = tuple(s.strip().upper() for s in args.symbols.split(","))
    lead = args.settle_s + 30
    rates = {s: REAL_RATES.get(s, args.trades_per_s) for s in symbols} if args.real_rates else None
    spec = SyntheticSpec(
        seed=34,
        symbols=symbols,
        duration_s=args.minutes * 60,
        trades_per_s=args.trades_per_s,
        rates=rates,
        burstiness=1.0,
        depth_interval_ms=args.depth_ms,
        start_time=time.time() + lead,
        binance_stream_names=True,
    )
    root = Path(tempfile.mkdtemp(prefix="tapeflow-cpu-"))
    with live_stack(root / "home", spec, start="session_time", startup_timeout_s=max(120.0, args.settle_s)) as stack:
        while time.time() < spec.start_time + 5:
            time.sleep(0.5)
        t0, c0 = time.monotonic(), sample(stack)
        while time.time() < spec.start_time + spec.duration_s:
            time.sleep(1.0)
        t1, c1 = time.monotonic(), sample(stack)
        per_symbol = (
            ", ".join(f"{s} {r:g}" for s, r in rates.items()) + " trades/s"
            if rates
            else f"{args.trades_per_s:g} trades/s each"
        )
        replaying = report(
            f"replaying {len(symbols)} symbols at 1x, {per_symbol}, depth every {args.depth_ms} ms ({t1 - t0:.0f} s)",
            shares(c0, c1, t1 - t0),
        )
        time.sleep(10)  # the last records through
        t2, c2, w2 = time.monotonic(), sample(stack), wakeups(stack)
        time.sleep(args.idle_s)
        t3, c3, w3 = time.monotonic(), sample(stack), wakeups(stack)
        idle = report(f"idle after the session ({t3 - t2:.0f} s)", shares(c2, c3, t3 - t2))
        print("== wakeups per second while idle (voluntary context switches, every thread)")
        for name in sorted(w3, key=lambda n: -(w3[n] - w2.get(n, w3[n]))):
            if name in w2:
                print(f"  {name:<16} {(w3[name] - w2[name]) / (t3 - t2):7.1f}/s")
        if args.attribute_s > 0:
            attribute(stack, args.attribute_s)
        held = topic_records(root / "home")
        rss = psutil.Process(stack.sup.running["broker"].proc.pid).memory_info().rss / 2**20
        total = sum(held.values())
        disk = sum(f.stat().st_size for f in (root / "home" / "kafka" / "data").rglob("*") if f.is_file()) / 2**20
        print(
            f"== broker memory: RSS {rss:.0f} MB (heap bounded by TAPEFLOW_BROKER_HEAP_MB), log on disk "
            f"{disk:.0f} MB, holding {total:,} records in the catalogue topics; "
            + ", ".join(f"{k} {v:,}" for k, v in sorted(held.items(), key=lambda kv: -kv[1])[:5])
        )
    measured = {"broker replaying": replaying["broker"], "broker idle": idle["broker"], "stack idle": idle["stack"]}
    print("== against the target and the baseline (the former stand-in broker)")
    for key, value in measured.items():
        print(
            f"  {key:<18} {value:6.2f} %   target <= {TARGETS[key]:g} % (ratio {value / TARGETS[key]:.2f}),"
            f" baseline {BASELINE[key]:g} % (ratio {value / BASELINE[key]:.2f})"
        )


if __name__ == "__main__":
    main()
