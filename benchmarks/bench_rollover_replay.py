"""What a rollover costs a replay at max speed: when the last features appear, with and without rollovers.

The whole stack as `tapeflow up --source replay:DIR --replay-speed max` runs it (supervisor, Tansu,
PostgreSQL, sink, engine, executor; the fake exchange replays a generated session under the producer's
replay control, ``tests.support.endurance.live_stack(replay_speed="max")``), twice on the same session:
once with the rollover threshold at ``--max-batches`` (several rollovers during the replay) and once
with rollovers off (``TAPEFLOW_EPOCH_MAX_BATCHES=0``). For each run, from the moment the stack is up:
when the database holds the session's last trade, and when it holds the last features (the newest
evaluation time stops moving for ``--settle-s``; the wall time of its last change). The difference
between the runs, per rollover, is what a rollover adds to a replay's end (target, issue 34: <= 5 s).
The two runs' features must be the same evaluations (count and newest time): printed.

Where a rollover's time goes: every service's CPU seconds (process and children, sampled while it runs:
a replay's producer exits when the replay ends) in both runs, and the rollover steps' durations from the
supervisor's log (also written to ``<home>/logs/supervisor.log``; the services' logs are beside it). At
max speed every process competes for the same cores, so a rollover's cost shows as CPU as well as waits.

    .venv/bin/python -u -m benchmarks.bench_rollover_replay [--minutes 30] [--trades-per-s 100] [--max-batches 400]
"""

from __future__ import annotations

import argparse
import re
import resource
import statistics
import tempfile
import time
from pathlib import Path

import psutil

from fake_exchange.synthetic import SyntheticSpec
from tests.support.endurance import expected_trades, live_stack

TARGET_S = 5.0


def _cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system) of ``pid`` and its live children; None when it is gone."""
    try:
        proc = psutil.Process(pid)
        total = sum(proc.cpu_times()[:2])
        for child in proc.children(recursive=True):
            try:
                total += sum(child.cpu_times()[:2])
            except psutil.Error:
                pass
        return total
    except psutil.Error:
        return None


def _sample_cpu(stack, seen: dict[str, float]) -> None:
    for name, running in list(stack.sup.running.items()):
        cpu = _cpu_s(running.proc.pid)
        if cpu is not None:
            seen[name] = max(cpu, seen.get(name, 0.0))


def _steps(log: list[str]) -> dict[str, list[float]]:
    """The rollover steps' durations from the supervisor's lines (``epochs     open done (4.1s)``)."""
    out: dict[str, list[float]] = {}
    for line in log:
        m = re.search(r"epochs\s+(\w+) done \(([\d.]+)s\)", line)
        if m:
            out.setdefault(m.group(1), []).append(float(m.group(2)))
        m = re.search(r"rollover took ([\d.]+)s", line)
        if m:
            out.setdefault("total", []).append(float(m.group(1)))
    return out


def run(spec: SyntheticSpec, max_batches: int, settle_s: float, timeout_s: float) -> dict:
    root = Path(tempfile.mkdtemp(prefix="tapeflow-rr-"))
    expected = expected_trades(spec)
    total = sum(n for n, _, _ in expected.values())
    with live_stack(root / "home", spec, max_batches=max_batches, replay_speed="max",
                    startup_timeout_s=180) as stack:
        t0 = time.monotonic()
        own0 = resource.getrusage(resource.RUSAGE_SELF)
        cpu: dict[str, float] = {}
        trades_at = None
        last_eval, last_change, count = None, t0, 0
        while time.monotonic() - t0 < timeout_s:
            rows = stack.query("SELECT count(*) FROM trades")[0][0]
            if trades_at is None and rows >= total:
                trades_at = time.monotonic() - t0
            newest, n = stack.query("SELECT max(eval_time), count(*) FROM features")[0]
            if (newest, n) != (last_eval, count):
                last_eval, count, last_change = newest, n, time.monotonic()
            if trades_at is not None and time.monotonic() - last_change >= settle_s:
                break
            _sample_cpu(stack, cpu)
            time.sleep(0.5)
        _sample_cpu(stack, cpu)
        own1 = resource.getrusage(resource.RUSAGE_SELF)
        cpu["bench+supervisor"] = own1.ru_utime + own1.ru_stime - own0.ru_utime - own0.ru_stime
        (root / "home" / "logs" / "supervisor.log").write_text("\n".join(stack.log) + "\n")
        steps = _steps(stack.log)
        sink_log = (root / "home" / "logs" / "sink.log").read_text(errors="replace")
        sink = {"rebalances": len(re.findall(r"\]\s+partitions assigned", sink_log)),  # the group's (subscribed)
                "assigned": sink_log.count("segment partitions assigned"),  # its own (following the segments)
                "follows": sink_log.count("following the topic segments")}
        rollovers = stack.epochs().rollovers if max_batches else 0
        rows = stack.query("SELECT count(*), count(DISTINCT (symbol, agg_id)) FROM trades")[0]
    return {"max_batches": max_batches, "rollovers": rollovers, "trades": rows, "expected": total,
            "trades_at_s": trades_at, "features_at_s": last_change - t0, "features": count, "newest": last_eval,
            "cpu": cpu, "steps": steps, "sink": sink, "home": str(root / "home")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=30.0, help="session length (event time)")
    ap.add_argument("--symbols", default="BTCUSDT,ETHUSDT")
    ap.add_argument("--trades-per-s", type=float, default=100.0, help="per symbol")
    ap.add_argument("--max-batches", type=int, default=400, help="rollover threshold of the run with rollovers")
    ap.add_argument("--settle-s", type=float, default=30.0, help="the newest features unchanged this long: done")
    ap.add_argument("--timeout-s", type=float, default=1800.0)
    args = ap.parse_args()
    start = time.time() - args.minutes * 60 - 3600  # an hour-old session: event times in the past, as a replay's
    spec = SyntheticSpec(seed=34, symbols=tuple(s.strip().upper() for s in args.symbols.split(",")),
                         duration_s=args.minutes * 60, trades_per_s=args.trades_per_s, burstiness=1.0,
                         start_time=start, binance_stream_names=True)
    results = [run(spec, args.max_batches, args.settle_s, args.timeout_s),
               run(spec, 0, args.settle_s, args.timeout_s)]
    for r in results:
        label = f"rollover at {r['max_batches']} batches" if r["max_batches"] else "no rollovers"
        print(f"{label:<28} {r['rollovers']:>3} rollovers; trades {r['trades'][0]} rows, {r['trades'][1]} distinct of "
              f"{r['expected']}, all stored at {r['trades_at_s'] or float('nan'):.1f} s; last features at "
              f"{r['features_at_s']:.1f} s ({r['features']} evaluations, newest {r['newest']})", flush=True)
        print(f"  sink: {r['sink']['follows']} segment changes, {r['sink']['rebalances']} group assignments "
              f"(rebalances), {r['sink']['assigned']} partition changes of its own")
        print(f"  home {r['home']}; CPU s: " + ", ".join(f"{k} {v:.1f}" for k, v in sorted(r["cpu"].items()))
              + f"; total {sum(r['cpu'].values()):.1f}")
        if r["steps"]:
            print("  rollover steps, median (max) s: " + ", ".join(
                f"{k} {statistics.median(v):.1f} ({max(v):.1f})" for k, v in r["steps"].items()))
    rolled, plain = results
    if rolled["rollovers"]:
        added = rolled["features_at_s"] - plain["features_at_s"]
        per = added / rolled["rollovers"]
        print(f"a rollover adds {per:.2f} s to when the last features appear ({added:.1f} s over "
              f"{rolled['rollovers']} rollovers; target <= {TARGET_S:g} s, ratio {per / TARGET_S:.2f}); "
              f"same evaluations: {(rolled['features'], rolled['newest']) == (plain['features'], plain['newest'])}")
        extra = {k: rolled["cpu"].get(k, 0.0) - plain["cpu"].get(k, 0.0) for k in rolled["cpu"]}
        print("CPU s per rollover, rolled minus plain: " + ", ".join(
            f"{k} {v / rolled['rollovers']:+.2f}" for k, v in sorted(extra.items(), key=lambda kv: -kv[1]))
            + f"; total {sum(extra.values()) / rolled['rollovers']:+.2f}")
    else:
        print("no rollover happened: lower --max-batches")


if __name__ == "__main__":
    main()
