"""A session replayed at max speed through the whole stack: how long after the replay ends the stack
has settled (every trade stored, the last features written).

The whole stack as `tapeflow up --source replay:DIR --replay-speed max` runs it (supervisor, Apache
Kafka, PostgreSQL, sink, engine, executor; the fake exchange replays a generated session under the
producer's replay control, ``tests.support.endurance.live_stack(replay_speed="max")``). The replay
ends when the producer exits (it exits after reading every frame and flushing). From then: when the
database holds the session's last trade, and when it holds the last features (the newest evaluation
time unchanged for ``--settle-s``; the wall time of its last change). Target (DESIGN.md section 7):
a 2 h session settled <= 10 s after it ends, every trade once.

Where the time goes: every service's CPU seconds (process and children, sampled while it runs) and
the replay's own wall time. At max speed every process competes for the same cores.

    .venv/bin/python -u -m benchmarks.bench_replay_settle [--minutes 120] [--trades-per-s 30] [--symbols BTCUSDT,ETHUSDT]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import psutil

from fake_exchange.synthetic import SyntheticSpec
from tests.support.endurance import expected_trades, live_stack

TARGET_S = 10.0


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


def _replay_over(stack) -> bool:
    run = stack.sup.running.get("producer")
    return run is None or run.proc.poll() is not None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=120.0, help="session length (event time)")
    ap.add_argument("--symbols", default="BTCUSDT,ETHUSDT")
    ap.add_argument("--trades-per-s", type=float, default=30.0, help="per symbol")
    ap.add_argument("--settle-s", type=float, default=30.0, help="the newest features unchanged this long: done")
    ap.add_argument("--timeout-s", type=float, default=3600.0)
    args = ap.parse_args()
    start = time.time() - args.minutes * 60 - 3600  # an hour-old session: event times in the past, as a replay's
    spec = SyntheticSpec(
        seed=34,
        symbols=tuple(s.strip().upper() for s in args.symbols.split(",")),
        duration_s=args.minutes * 60,
        trades_per_s=args.trades_per_s,
        burstiness=1.0,
        start_time=start,
        binance_stream_names=True,
    )
    expected = expected_trades(spec)
    total = sum(n for n, _, _ in expected.values())
    print(f"session: {total:,} trades over {args.minutes:g} min of {', '.join(spec.symbols)}", flush=True)
    root = Path(tempfile.mkdtemp(prefix="tapeflow-settle-"))
    with live_stack(root / "home", spec, replay_speed="max", startup_timeout_s=180) as stack:
        t0 = time.monotonic()
        own0 = resource.getrusage(resource.RUSAGE_SELF)
        cpu: dict[str, float] = {}
        ended = trades_at = None
        last_eval, last_change, count = None, t0, 0
        while time.monotonic() - t0 < args.timeout_s:
            if ended is None and _replay_over(stack):
                ended = time.monotonic()
            rows = stack.query("SELECT count(*) FROM trades")[0][0]
            if trades_at is None and rows >= total:
                trades_at = time.monotonic()
            newest, n = stack.query("SELECT max(eval_time), count(*) FROM features")[0]
            if (newest, n) != (last_eval, count):
                last_eval, count, last_change = newest, n, time.monotonic()
            if ended is not None and trades_at is not None and time.monotonic() - last_change >= args.settle_s:
                break
            _sample_cpu(stack, cpu)
            time.sleep(0.5)
        _sample_cpu(stack, cpu)
        own1 = resource.getrusage(resource.RUSAGE_SELF)
        cpu["bench+supervisor"] = own1.ru_utime + own1.ru_stime - own0.ru_utime - own0.ru_stime
        (root / "home" / "logs" / "supervisor.log").write_text("\n".join(stack.log) + "\n")
        stored, distinct = stack.query("SELECT count(*), count(DISTINCT (symbol, agg_id)) FROM trades")[0]
    if ended is None:
        print(f"the replay did not end within {args.timeout_s:g} s")
        return
    settled = max(last_change, trades_at or last_change) - ended
    print(f"replay: {ended - t0:.1f} s from the stack up to the producer's exit")
    print(
        f"trades: {stored:,} rows, {distinct:,} distinct of {total:,} "
        f"({'EXACT' if stored == distinct == total else 'MISMATCH'}); all stored "
        f"{(trades_at - ended) if trades_at else float('nan'):+.1f} s after the replay ended"
    )
    print(
        f"features: {count:,} evaluations, newest {last_eval}; last written {last_change - ended:+.1f} s "
        f"after the replay ended"
    )
    print(f"settled {settled:.1f} s after the replay ended (target <= {TARGET_S:g} s, ratio {settled / TARGET_S:.2f})")
    print(
        f"home {root / 'home'}; CPU s: "
        + ", ".join(f"{k} {v:.1f}" for k, v in sorted(cpu.items()))
        + f"; total {sum(cpu.values()):.1f}"
    )


if __name__ == "__main__":
    main()
