"""CPU and wall time of the embedded broker's start, with and without the class-data-sharing archive.

What a user runs: the broker `tapeflow up` starts (``KafkaBroker.prepare``'s JVM and options, a fresh
home, formatted once before the timed start), timed from the spawn to its port accepting connections;
CPU is the JVM's own user + system time at that moment (``/proc``). Each round starts it once as the
bootstrap leaves it (mapping ``tapeflow/stack/broker_cds.py``'s archive) and once without the archive
option, alternated so load changes hit both alike. The baseline is the start without the archive; the
target is the ~40 % CPU cut that made the archive worth a bootstrap step (ratio <= 0.6).

Run: ``.venv/bin/python -m benchmarks.bench_broker_start [--rounds 5]`` (needs the archive: ``make
bootstrap`` or ``python -m tapeflow.stack.broker_cds``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from tapeflow.stack.broker import KafkaBroker
from tapeflow_runtime.paths import StackPaths
from tapeflow_runtime.settings import Settings

TARGET_RATIO = 0.6


def one_start(with_archive: bool) -> tuple[float, float]:
    """(wall s, CPU s) from spawn to a listening broker, in a fresh home."""
    home = Path(tempfile.mkdtemp(prefix="bench-broker-start-"))
    try:
        paths = StackPaths(home)
        paths.ensure()
        settings = Settings(home=home, broker=None, database_url=None, broker_port=0, database_port=0)
        launch = KafkaBroker(settings, paths).prepare()  # formats the fresh log first, untimed
        argv = [a for a in launch.argv if with_archive or not a.startswith("-XX:SharedArchiveFile=")]
        if with_archive and not any(a.startswith("-XX:SharedArchiveFile=") for a in argv):
            raise SystemExit("no archive: run `make bootstrap` (or python -m tapeflow.stack.broker_cds) first")
        host, port = launch.address.rsplit(":", 1)
        t0 = time.monotonic()
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            while True:
                try:
                    socket.create_connection((host, int(port)), 0.2).close()
                    break
                except OSError:
                    if proc.poll() is not None:
                        raise SystemExit(f"the broker exited {proc.returncode}") from None
                    time.sleep(0.02)
            wall = time.monotonic() - t0
            fields = open(f"/proc/{proc.pid}/stat").read().rsplit(")", 1)[1].split()
            cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        finally:
            proc.kill()
            proc.wait()
        return wall, cpu
    finally:
        shutil.rmtree(home, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    runs: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
    load0 = os.getloadavg()[0]
    for _ in range(args.rounds):
        for with_archive in (True, False):
            runs[with_archive].append(one_start(with_archive))
    print(f"broker start, {args.rounds} rounds alternated, load {load0:.1f} -> {os.getloadavg()[0]:.1f}")
    med = {k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for k, v in runs.items()}
    for k, label in ((False, "without archive (baseline)"), (True, "with archive")):
        print(f"  {label:27s} median wall {med[k][0]:6.2f} s   CPU {med[k][1]:5.2f} s")
    ratio = med[True][1] / med[False][1]
    print(f"  CPU ratio {ratio:.3f} to the baseline (target <= {TARGET_RATIO}: {ratio / TARGET_RATIO:.2f}x the target)")
    print(f"  wall ratio {med[True][0] / med[False][0]:.3f} to the baseline")


if __name__ == "__main__":
    main()
