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

    .venv/bin/python -u -m benchmarks.bench_rollover_replay [--minutes 30] [--trades-per-s 100] [--max-batches 400]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from fake_exchange.synthetic import SyntheticSpec
from tests.support.endurance import expected_trades, live_stack

TARGET_S = 5.0


def run(spec: SyntheticSpec, max_batches: int, settle_s: float, timeout_s: float) -> dict:
    root = Path(tempfile.mkdtemp(prefix="tapeflow-rr-"))
    expected = expected_trades(spec)
    total = sum(n for n, _, _ in expected.values())
    with live_stack(root / "home", spec, max_batches=max_batches, replay_speed="max",
                    startup_timeout_s=180) as stack:
        t0 = time.monotonic()
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
            time.sleep(0.5)
        rollovers = stack.epochs().rollovers if max_batches else 0
        rows = stack.query("SELECT count(*), count(DISTINCT (symbol, agg_id)) FROM trades")[0]
    return {"max_batches": max_batches, "rollovers": rollovers, "trades": rows, "expected": total,
            "trades_at_s": trades_at, "features_at_s": last_change - t0, "features": count, "newest": last_eval}


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
    rolled, plain = results
    if rolled["rollovers"]:
        added = rolled["features_at_s"] - plain["features_at_s"]
        per = added / rolled["rollovers"]
        print(f"a rollover adds {per:.2f} s to when the last features appear ({added:.1f} s over "
              f"{rolled['rollovers']} rollovers; target <= {TARGET_S:g} s, ratio {per / TARGET_S:.2f}); "
              f"same evaluations: {(rolled['features'], rolled['newest']) == (plain['features'], plain['newest'])}")
    else:
        print("no rollover happened: lower --max-batches")


if __name__ == "__main__":
    main()
