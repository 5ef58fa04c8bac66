"""Engine replay speed on a realistic session (target: >= 3,000,000 trades/s, one process).

What is measured: the engine core as a replay drives it — one ``Engine`` per symbol (as the backtest
runner and the live worker keep one per key), fed hour by hour with columnar trades, book and mark
batches and the few liquidation and indicator events, the three shipped strategies, the live
cadence (every closed second with trades and every 15 s), a feature record for every evaluation
(kept as columns: ``EngineOutput.tables``) and every signal. Input generation is not timed (a
replay re-runs cached data). Not included: the executor (positions, fills), which the backtest runner
drives beside the engine.

Baseline: the engine as it was before its compiled core (git commit ``BASELINE_REF``), run in a subprocess
from a ``git archive`` of that commit on the first ``--baseline-hours`` of the same input (it is
about 80x slower, so the whole session would take many minutes). The new engine runs the same
prefix, and both print a digest of every feature record and signal (JSON, floats as repr): equal
digests mean identical output.

Run: ``.venv/bin/python -m benchmarks.bench_backtest_speed [--trades 10000000] [--baseline-hours 2]``
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

from benchmarks.session import HOUR_MS, START_MS, generate_session, hourly, seconds_for_trades
from stream_apps.core.engine import Engine, EngineOutput
from stream_apps.core.params import StateParams
from stream_apps.core.strategy import default_strategy_dir, load_strategies

TARGET = 3_000_000
BASELINE_REF = "3606ea9"  # main before the compiled core (the one-evaluation-at-a-time engine)
SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT"]
REPO = Path(__file__).resolve().parent.parent


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_new(sessions, state_params, hours: float | None = None) -> tuple[dict, list[EngineOutput]]:
    strategies = load_strategies(default_strategy_dir())
    end = None if hours is None else START_MS + int(hours * HOUR_MS)
    trades = evaluations = signals = bars = 0
    outputs = []
    began, cpu = time.perf_counter(), time.process_time()
    for session in sessions:
        engine = Engine(strategies, state_params=state_params)
        for batch, events in hourly(session):
            if end is not None and len(batch) and batch.time_ms[0] >= end:
                break
            out = engine.process([batch], events)
            trades += len(batch)
            evaluations += out.evaluations
            signals += len(out.signals)
            bars += len(out.bars)
            if hours is not None:
                outputs.append(out)
    elapsed, cpu = time.perf_counter() - began, time.process_time() - cpu
    return {
        "trades": trades,
        "feature_records": evaluations,
        "signals": signals,
        "bars": bars,
        "seconds": elapsed,
        "cpu_seconds": cpu,
    }, outputs


def digest(features: list[dict], signals: list[dict]) -> str:
    h = hashlib.sha256()
    for item in features + signals:
        h.update(json.dumps(item, sort_keys=True).encode())
    return h.hexdigest()[:16]


_BASELINE_SCRIPT = textwrap.dedent("""
    import hashlib, json, sys, time
    import numpy as np
    import stream_apps.core.events as ev
    from stream_apps.core.engine import Engine
    from stream_apps.core.events import BookUpdate, MarkUpdate, TradeBatch
    from stream_apps.core.strategy import default_strategy_dir, load_strategies
    arrays = np.load(sys.argv[1] + ".npz")
    data = []
    for s, (symbol, slices) in enumerate(json.load(open(sys.argv[1] + ".json"))):
        data.append((symbol, [(tuple(arrays[f"{s}_{k}_t{j}"] for j in range(5)),
                               tuple(arrays[f"{s}_{k}_b{j}"] for j in range(2)),
                               tuple(arrays[f"{s}_{k}_m{j}"] for j in range(5)),
                               [getattr(ev, name)(**fields) for name, fields in others])
                              for k, others in enumerate(slices)]))
    strategies = load_strategies(default_strategy_dir())
    trades = features = signals = 0
    h = hashlib.sha256()
    outs = []
    began = time.perf_counter()
    for symbol, slices in data:
        engine = Engine(strategies)
        for t, books, marks, others in slices:
            batch = TradeBatch.from_arrays("binance", symbol, *t)
            events = [BookUpdate("binance", symbol, int(a), float(b)) for a, b in zip(*books)]
            events += [MarkUpdate("binance", symbol, int(a), float(b), float(c), float(d), int(e))
                       for a, b, c, d, e in zip(*marks)]
            events += others
            events.sort(key=lambda e: e.time_ms)
            out = engine.process([batch], events)
            trades += len(batch)
            features += len(out.features)
            signals += len(out.signals)
            outs.append(out)
    elapsed = time.perf_counter() - began
    every = [f for out in outs for f in out.features] + [s for out in outs for s in out.signals]
    for item in every:  # the same order as digest(): every feature record, then every signal
        h.update(json.dumps(item, sort_keys=True).encode())
    print(json.dumps({"trades": trades, "feature_records": features, "signals": signals, "seconds": elapsed,
                      "digest": h.hexdigest()[:16]}))
""")


def run_baseline(sessions, hours: float, ref: str) -> dict:
    end = START_MS + int(hours * HOUR_MS)
    data = []
    for session in sessions:
        slices = []
        for batch, events in hourly(session):
            if len(batch) and batch.time_ms[0] >= end:
                break
            books, marks, *others = events
            slices.append(
                (
                    (batch.agg_id, batch.time_ms, batch.price, batch.qty, batch.taker_sell),
                    (books.time_ms, books.obi),
                    (
                        marks.time_ms,
                        marks.mark_price,
                        marks.index_price,
                        marks.funding_rate,
                        marks.next_funding_time_ms,
                    ),
                    others,
                )
            )
        data.append((session.symbol, slices))
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", ref, "stream_apps", "schemas", "tapeflow_runtime"],
            check=True,
            capture_output=True,
        ).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        # numpy arrays and JSON, never pickle (no code-executing codec anywhere, benchmarks included)
        path = Path(tmp) / "input"
        arrays, index = {}, []
        for s, (symbol, slices) in enumerate(data):
            for k, (t, books, marks, _others) in enumerate(slices):
                for group, columns in (("t", t), ("b", books), ("m", marks)):
                    for j, column in enumerate(columns):
                        arrays[f"{s}_{k}_{group}{j}"] = np.asarray(column)
            index.append(
                [symbol, [[[type(e).__name__, dataclasses.asdict(e)] for e in others] for _t, _b, _m, others in slices]]
            )
        np.savez(f"{path}.npz", **arrays)
        Path(f"{path}.json").write_text(json.dumps(index))
        script = Path(tmp) / "baseline.py"
        script.write_text(_BASELINE_SCRIPT)
        env = {**os.environ, "PYTHONPATH": tmp}
        done = subprocess.run(
            [sys.executable, str(script), str(path)], check=True, capture_output=True, text=True, env=env, cwd=tmp
        )
        return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trades", type=int, default=10_000_000, help="about this many trades in the session")
    parser.add_argument("--symbols", default=",".join(SYMBOLS))
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--baseline-hours", type=float, default=2.0, help="prefix the old engine runs (0: skip)")
    parser.add_argument("--baseline-ref", default=BASELINE_REF)
    parser.add_argument("--live-params", action="store_true", help="also time the live ring sizes (1-minute segments)")
    args = parser.parse_args()
    symbols = args.symbols.split(",")

    began = time.perf_counter()
    sessions = generate_session(symbols, START_MS, seconds_for_trades(symbols, args.trades), args.seed)
    total = sum(len(s.trades) for s in sessions)
    events = sum(len(s.books) + len(s.marks) + len(s.others) for s in sessions)
    hours = (max(int(s.trades.time_ms[-1]) for s in sessions) - START_MS) / HOUR_MS
    print(
        f"session: {total:,} trades, {events:,} other inputs, {len(symbols)} symbols, {hours:.1f} h "
        f"(generated in {time.perf_counter() - began:.1f} s, not timed)"
    )

    result, _ = run_new(sessions, StateParams.for_replay)
    rate = result["trades"] / result["seconds"]
    cpu_rate = result["trades"] / result["cpu_seconds"]
    evals_per_s = result["feature_records"] / len(load_strategies(default_strategy_dir())) / result["seconds"]
    print(
        f"engine (replay rings, ~1 h segments): {result['trades']:,} trades in {result['seconds']:.2f} s "
        f"(cpu {result['cpu_seconds']:.2f} s) = {rate:,.0f} trades/s = {rate / TARGET:.2f}x the 3 M target "
        f"({cpu_rate:,.0f} per CPU second = {cpu_rate / TARGET:.2f}x; load {os.getloadavg()[0]:.1f}); "
        f"{result['feature_records']:,} feature records ({evals_per_s:,.0f} symbol evaluations/s), "
        f"{result['signals']:,} signals, {result['bars']:,} bars; peak RSS {peak_rss_mib():,.0f} MiB"
    )
    if args.live_params:
        live, _ = run_new(sessions, StateParams.for_symbol)
        live_rate = live["trades"] / live["seconds"]
        print(
            f"engine (live rings, ~1.5 min segments): {live_rate:,.0f} trades/s = {live_rate / TARGET:.2f}x the target"
        )

    if args.baseline_hours > 0:
        base = run_baseline(sessions, args.baseline_hours, args.baseline_ref)
        prefix, outputs = run_new(sessions, StateParams.for_replay, args.baseline_hours)
        merged = EngineOutput()
        for out in outputs:
            merged.extend(out)
        new_digest = digest(merged.features, merged.signals)
        base_rate = base["trades"] / base["seconds"]
        prefix_rate = prefix["trades"] / prefix["seconds"]
        equal = new_digest == base["digest"] and base["feature_records"] == len(merged.features)
        same = "identical" if equal else "DIFFERENT"
        print(
            f"baseline engine {args.baseline_ref} on the first {args.baseline_hours:g} h: {base['trades']:,} "
            f"trades in "
            f"{base['seconds']:.2f} s = {base_rate:,.0f} trades/s; new engine on the same prefix {prefix_rate:,.0f} "
            f"trades/s ({prefix_rate / base_rate:.1f}x); full-session rate / baseline rate = {rate / base_rate:.1f}x"
        )
        print(
            f"output on the prefix: {same} ({len(merged.features):,} feature records, {len(merged.signals)} signals; "
            f"digest {new_digest} vs {base['digest']})"
        )


if __name__ == "__main__":
    main()
