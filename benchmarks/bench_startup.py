"""Time from `tapeflow up --detach` to a healthy stack, cold (fresh home: initdb) and warm, and `down`.

Run: .venv/bin/python -m benchmarks.bench_startup [--runs 5]
Target: startup to healthy <= 15 s on the 2-core dev machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed(home: Path, *args: str) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAPEFLOW_")}
    env["TAPEFLOW_HOME"] = str(home)
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "tapeflow", *args], env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"tapeflow {' '.join(args)} failed:\n{res.stdout}{res.stderr}")
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    cold, warm, down = [], [], []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            home = Path(tmp) / "home"
            cold.append(timed(home, "up", "--detach"))
            down.append(timed(home, "down"))
            warm.append(timed(home, "up", "--detach"))
            down.append(timed(home, "down"))
    for name, xs in (("cold up (fresh home, initdb)", cold), ("warm up (existing home)", warm), ("down", down)):
        print(f"{name:<30} median {statistics.median(xs):6.2f} s   max {max(xs):6.2f} s   (n={len(xs)})")
    print(f"target: healthy <= 15 s; worst cold start is {max(cold) / 15:.2f}x of the budget")


if __name__ == "__main__":
    main()
