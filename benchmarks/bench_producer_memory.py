"""The producer's memory over a long live run, with glibc's allocator as it is and with the knobs
that could give freed memory back: does the resident size level off, and does trimming help?

Background (RESULTS.md, "The producer's slow memory growth"): `tapeflow produce` grew ~0.1 MB a
minute at 40 trades/s, all of it free memory glibc keeps in the main arena (in use flat). Here
several `tapeflow produce` processes run side by side, each against its own fake exchange playing
the same synthetic session in real time (``--speed 1``, 2 symbols, ``--trades-per-s`` each, depth
every 100 ms, BTC-like bursts), publishing into one embedded Kafka under their own topic prefixes.
They differ only in the allocator's setting:

* ``default``: what ``tapeflow produce`` does (since ``tapeflow_runtime.native_memory.live_service_allocator``:
  glibc's mmap threshold fixed at 64 KiB);
* ``dynamic``: glibc's own dynamic threshold, as before (the baseline; a wrapper makes
  ``live_service_allocator`` a no-op before ``python -m tapeflow produce`` runs);
* ``trim60``: ``dynamic`` plus a thread calling glibc's ``malloc_trim(0)`` every 60 s (trimming
  releases free pages anywhere in the heap, not only at its top);
* ``mmap64k``: ``dynamic`` with ``MALLOC_MMAP_THRESHOLD_=65536`` in the environment (what the
  default now does from inside);
* ``arena2``: ``dynamic`` with ``MALLOC_ARENA_MAX=2``.

Every ``--sample-s`` the resident size (RSS) and the private dirty memory of each process is read
from ``/proc/PID/smaps_rollup``. Printed per variant: the first and last sample, the slope over the
run after ``--settle-min`` (least squares, MB per hour), the CPU it used and the slope's ratio to
the baseline's (``dynamic``); the target is a slope of ~0 (memory levels off) rather than a number.

    .venv/bin/python -m benchmarks.bench_producer_memory --minutes 40
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.embedded_broker import broker
from tests.support.replay_runs import service_env
from tests.support.services import Service

SYMBOLS = ("BTCUSDT", "ETHUSDT")

#: ``python -m tapeflow produce ...`` with glibc's dynamic threshold (the service's fixed one skipped)
DYNAMIC = """
import runpy, sys
import tapeflow_runtime.native_memory as native_memory
native_memory.live_service_allocator = lambda: None
sys.argv = ["tapeflow", *sys.argv[1:]]
runpy.run_module("tapeflow", run_name="__main__")
"""

#: the same with a thread calling ``malloc_trim(0)`` every minute
TRIM60 = (
    """
import ctypes, threading, time
libc = ctypes.CDLL("libc.so.6")
def trim():
    while True:
        time.sleep(60)
        libc.malloc_trim(0)
threading.Thread(target=trim, daemon=True).start()
"""
    + DYNAMIC
)

VARIANTS: dict[str, tuple[dict[str, str], tuple[str, ...]]] = {
    "default": ({}, (sys.executable, "-m", "tapeflow")),
    "dynamic": ({}, (sys.executable, "-c", DYNAMIC)),
    "trim60": ({}, (sys.executable, "-c", TRIM60)),
    "mmap64k": ({"MALLOC_MMAP_THRESHOLD_": "65536"}, (sys.executable, "-c", DYNAMIC)),
    "arena2": ({"MALLOC_ARENA_MAX": "2"}, (sys.executable, "-c", DYNAMIC)),
}
BASELINE = "dynamic"


def memory_mb(pid: int) -> tuple[float, float]:
    """(RSS, private dirty) in MB from smaps_rollup."""
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, _, rest = line.partition(":")
        fields[name] = int(rest.split()[0])
    return fields["Rss"] / 1024, fields["Private_Dirty"] / 1024


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def slope_per_hour(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MB), in MB per hour."""
    n = len(points)
    if n < 2:
        return float("nan")
    mx = sum(t for t, _ in points) / n
    my = sum(v for _, v in points) / n
    den = sum((t - mx) ** 2 for t, _ in points)
    return 3600 * sum((t - mx) * (v - my) for t, v in points) / den if den else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=40.0)
    parser.add_argument("--trades-per-s", type=float, default=20.0, help="per symbol")
    parser.add_argument("--sample-s", type=float, default=30.0)
    parser.add_argument("--settle-min", type=float, default=5.0, help="samples before this are not in the slope")
    parser.add_argument(
        "--variants", default="default,dynamic,trim60", help=f"comma-separated, of {', '.join(VARIANTS)}"
    )
    parser.add_argument("--bootstrap", default=None, help="a broker to use instead of the embedded Kafka")
    parser.add_argument("--out", default=None, help="also write every sample as JSON here")
    args = parser.parse_args()
    names = [v for v in args.variants.split(",") if v]
    duration_s = args.minutes * 60 + 300  # the session outlasts the run
    with (
        tempfile.TemporaryDirectory(prefix="bench-producer-memory-") as tmp,
        broker(args.bootstrap, Path(tmp) / "broker") as bootstrap,
    ):
        from tapeflow_runtime.kafka_client import ensure_topics

        print(f"logs under {tmp}", flush=True)

        services: list[Service] = []
        producers: dict[str, Service] = {}
        try:
            for name in names:
                extra_env, command = VARIANTS[name]
                workdir = Path(tmp) / name
                workdir.mkdir()
                prefix = f"mem{name}."
                ensure_topics(bootstrap, prefix=prefix)
                env = service_env(bootstrap, prefix, workdir) | {"TAPEFLOW_SYMBOLS": ",".join(SYMBOLS)} | extra_env
                fake = Service(
                    f"fake-{name}",
                    [
                        "fake-exchange",
                        "--synthetic-seed",
                        "7",
                        "--synthetic-symbols",
                        ",".join(SYMBOLS),
                        "--synthetic-duration",
                        str(duration_s),
                        "--synthetic-trades-per-s",
                        str(args.trades_per_s),
                        "--synthetic-burstiness",
                        "1",
                        "--speed",
                        "1",
                    ],
                    env,
                    workdir,
                )
                services.append(fake)
                urls = json.loads(fake.wait_for_line(r"\{\"ws_url\".*\}", 300).group(0))
                rest = urls["rest_url"]
                producers[name] = Service(
                    name,
                    [
                        "produce",
                        "--ws-url",
                        urls["ws_url"],
                        "--rest-url",
                        rest,
                        "--spot-url",
                        rest,
                        "--coinbase-url",
                        rest,
                        "--metrics-port",
                        "0",
                    ],
                    env,
                    workdir,
                    command=command,
                )
                services.append(producers[name])
            began = time.monotonic()
            samples: dict[str, list[tuple[float, float, float]]] = {name: [] for name in names}
            while (now := time.monotonic() - began) < args.minutes * 60:
                for name, svc in producers.items():
                    if svc.proc.poll() is not None:
                        raise SystemExit(f"{name} exited {svc.proc.returncode}\n{svc.tail()}")
                    rss, dirty = memory_mb(svc.proc.pid)
                    samples[name].append((round(now, 1), round(rss, 2), round(dirty, 2)))
                line = "  ".join(f"{n} {s[-1][1]:.1f}" for n, s in samples.items())
                print(f"{now / 60:6.1f} min  RSS MB: {line}", flush=True)
                time.sleep(args.sample_s)
            cpu = {name: cpu_seconds(svc.proc.pid) for name, svc in producers.items()}
        finally:
            for svc in services:
                svc.proc.kill()
    if args.out:
        Path(args.out).write_text(json.dumps(samples))
    settle = args.settle_min * 60
    slopes = {name: slope_per_hour([(t, r) for t, r, _ in rows if t >= settle]) for name, rows in samples.items()}
    base = slopes.get(BASELINE)
    print(
        f"\nproducer memory, {args.minutes:g} min at {args.trades_per_s:g} trades/s x {len(SYMBOLS)} symbols "
        f"(slopes after {args.settle_min:g} min; baseline: {BASELINE}, glibc's dynamic threshold; target: ~0 MB/h)"
    )
    print(
        f"{'variant':9} {'RSS first':>9} {'RSS last':>9} {'RSS MB/h':>9} {'dirty MB/h':>10} {'CPU s':>6} {'vs ' + BASELINE:>11}"
    )
    for name, rows in samples.items():
        dirty_slope = slope_per_hour([(t, d) for t, _, d in rows if t >= settle])
        ratio = f"{slopes[name] / base:.2f}" if base else "-"
        print(
            f"{name:9} {rows[0][1]:9.1f} {rows[-1][1]:9.1f} {slopes[name]:9.2f} {dirty_slope:10.2f} "
            f"{cpu[name]:6.1f} {ratio:>11}"
        )


if __name__ == "__main__":
    main()
