"""Memory of the engine and the executor per topic-epoch rollover (issue 34: they grew ~0.5 MB a rollover).

Runs ``benchmarks.bench_endurance`` (its arguments after ``--``) with ``benchmarks/rollover_memory`` on
``PYTHONPATH``, whose ``sitecustomize`` samples every ``tapeflow engine`` / ``tapeflow execute`` process
of the stack (resident memory, glibc's arenas in use and free, the interpreter's allocated blocks); then
counts each process's rollovers from its own log ("moved on to the next topic epoch") and prints, per
process: RSS at every 5th rollover and the least-squares slope of RSS, malloc in use, malloc free and
Python blocks against the rollover count, from ``--from-rollover`` on (choose it past the retention
window's filling: the kept segments' metadata grows until then). The baseline is issue 34's 0.5 MB per
rollover; the target is flat (0).

Many rollovers fast: a low rollover threshold and a short retention, e.g.

    TAPEFLOW_TOPIC_RETENTION=5m TAPEFLOW_MARKET_DATA_LINGER_MS=0 .venv/bin/python -m benchmarks.bench_rollover_memory \\
        --from-rollover 20 -- --minutes 15 --trades-per-s 150 --burstiness 0.5 --max-batches 1500 --sample-s 15 \\
        --no-read-history
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess  # nosec B404 # the project's own benchmark
import sys
import tempfile
from datetime import datetime
from pathlib import Path

import numpy as np

SAMPLER = Path(__file__).resolve().parent / "rollover_memory"
MOVED = {"engine": ("engine.log", "engine moved on to the next topic epoch"),
         "execute": ("executor.log", "executor moved on to the next topic epoch")}
BASELINE_MB = 0.5  # issue 34's 55-minute run: engine 189 -> 242 MB, executor 157 -> 193 MB over 111 rollovers


def moves(log: Path, needle: str) -> list[float]:
    """Wall times of the rollovers a service logged (its log's ISO timestamps)."""
    out = []
    for line in log.read_text(errors="replace").splitlines():
        if needle in line:
            try:
                out.append(datetime.fromisoformat(line.split()[0].replace("Z", "+00:00")).timestamp())
            except ValueError:
                continue
    return out


def report(path: Path, from_rollover: int) -> None:
    samples = [s for s in (json.loads(line) for line in path.read_text().splitlines()) if "rss" in s]
    if not samples:
        print(f"{path.name}: no samples")
        return
    which = path.name.split("-")[0]
    log_name, needle = MOVED[which]
    times = moves(Path(samples[0]["home"]) / "logs" / log_name, needle)
    mb = 2 ** 20
    rows = [(sum(1 for t in times if t <= s["t"]), s["rss"] / mb, s.get("malloc_in_use", 0) / mb,
             s.get("malloc_free", 0) / mb, s["blocks"] / 1000) for s in samples]
    print(f"{which} (pid {path.stem.split('-')[1]}): {len(times)} rollovers, {len(rows)} samples, "
          f"RSS {rows[0][1]:.1f} -> {rows[-1][1]:.1f} MB, CPU {samples[-1]['cpu']:.0f} s")
    seen = -1
    for k, rss, used, free, blocks in rows:
        if k != seen and k % 5 == 0:
            print(f"  rollover {k:3d}: RSS {rss:6.1f} MB  malloc in use {used:5.1f}  free {free:5.1f}  "
                  f"Python blocks {blocks:6.0f} k")
            seen = k
    fit = [r for r in rows if r[0] >= from_rollover]
    if len(fit) < 3 or fit[-1][0] == fit[0][0]:
        print(f"  too few rollovers past {from_rollover} for a slope")
        return
    x = np.array([r[0] for r in fit], dtype=float)
    slope = [float(np.polyfit(x, np.array([r[i] for r in fit]), 1)[0]) for i in (1, 2, 3, 4)]
    print(f"  per rollover from rollover {from_rollover} to {fit[-1][0]}: RSS {slope[0]:+.3f} MB "
          f"({slope[0] / BASELINE_MB:.2f}x issue 34's {BASELINE_MB} MB; target 0), malloc in use {slope[1]:+.3f}, "
          f"free {slope[2]:+.3f} MB, Python blocks {slope[3]:+.2f} k")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--from-rollover", type=int, default=20, help="fit the slopes from this rollover on")
    ap.add_argument("--samples", type=Path, help="report on this directory of samples instead of running")
    ap.add_argument("endurance", nargs=argparse.REMAINDER, help="-- then bench_endurance's arguments")
    args = ap.parse_args()
    directory = args.samples
    if directory is None:
        directory = Path(tempfile.mkdtemp(prefix="rollover-memory-"))
        env = {**os.environ, "TAPEFLOW_MEMSAMPLE_DIR": str(directory),
               "PYTHONPATH": os.pathsep.join([str(SAMPLER), *filter(None, [os.environ.get("PYTHONPATH")])])}
        rest = args.endurance[1:] if args.endurance[:1] == ["--"] else args.endurance
        subprocess.run([sys.executable, "-u", "-m", "benchmarks.bench_endurance", *rest], env=env,  # nosec B603
                       check=True)
        print(f"\n== memory per rollover (samples in {directory}) ==")
    for path in sorted(directory.glob("*.jsonl")):
        report(path, args.from_rollover)


if __name__ == "__main__":
    main()
