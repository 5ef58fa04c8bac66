"""tapeflow's own processes in tests: start one with its log file, wait for /health, read /metrics, and
wait on what a consumer group has committed.

Shared by the widest tests (the whole pipeline, the replays, the image's wheel, the metrics contract),
which run each service as users do: one `tapeflow <command>` process per service.
"""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Coroutine
from pathlib import Path
from urllib.parse import quote

import psycopg

from tests.support.kafka import committed_offsets, group_consumer


class ServiceThread:
    """An async service entry (`run_executor`, `run_watchlist`) on a thread of its own until `close()`:
    ``start(stop)`` makes the coroutine, which returns its exit code once ``stop`` is set."""

    def __init__(self, start: Callable[[threading.Event], Coroutine], join_s: float = 30.0) -> None:
        self.stop = threading.Event()
        self.code: list[int] = []
        self.join_s = join_s
        self.thread = threading.Thread(target=lambda: self.code.append(asyncio.run(start(self.stop))), daemon=True)
        self.thread.start()

    def close(self) -> int:
        self.stop.set()
        self.thread.join(self.join_s)
        assert not self.thread.is_alive()
        return self.code[0]


class Service:
    """One `python -m tapeflow ...` process with its log file; killed by the test's cleanup if still alive."""

    def __init__(
        self,
        name: str,
        args: list[str],
        env: dict[str, str],
        workdir: Path,
        command: tuple[str, ...] = (sys.executable, "-m", "tapeflow"),
        cwd: Path | None = None,
    ) -> None:
        """`command`: how tapeflow is invoked (another virtualenv's `tapeflow` script, for instance)."""
        self.name = name
        self.log_path = workdir / f"{name}.log"
        with open(self.log_path, "w") as log:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(
                [*command, *args], cwd=cwd or workdir, env=env, stdout=log, stderr=subprocess.STDOUT
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def tail(self, chars: int = 4000) -> str:
        return f"--- {self.name} (exit {self.proc.poll()}):\n{self.log()[-chars:]}"

    def wait_for_line(self, pattern: str, timeout: float) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(pattern, self.log())
            if match:
                return match
            assert self.proc.poll() is None, f"{self.name} exited early\n{self.tail()}"
            time.sleep(0.2)
        raise AssertionError(f"{self.name}: no line matching {pattern!r} within {timeout} s\n{self.tail()}")

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM (a clean stop flushes outputs and commits offsets) and the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.name} did not stop within {timeout} s\n{self.tail()}") from None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return 0


def wait_healthy(service: Service, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if http_status(f"http://127.0.0.1:{port}/health") == 200:
            return
        assert service.proc.poll() is None, f"{service.name} exited early\n{service.tail()}"
        time.sleep(0.2)
    raise AssertionError(f"{service.name} not healthy within {timeout} s\n{service.tail()}")


def scrape(port: int, prefix: str) -> str:
    """The lines of a service's /metrics starting with `prefix` (for failure messages)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return "\n".join(line for line in response.read().decode().splitlines() if line.startswith(prefix))


def database_url(conninfo: str) -> str:
    """TAPEFLOW_DATABASE_URL (a postgresql:// URL) for the fixture's key=value conninfo."""
    p = psycopg.conninfo.conninfo_to_dict(conninfo)
    return (
        f"postgresql://{quote(p['user'], safe='')}:{quote(p.get('password') or '', safe='')}"
        f"@{p['host']}:{p['port']}/{p['dbname']}"
    )


def metrics_text(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


# --- topics and consumer groups --------------------------------------------------------------------
def record_counts(records: list[dict]) -> dict[int, int]:
    """Per partition, the offset after its last record (= what a consumer that read everything commits)."""
    ends: dict[int, int] = {}
    for r in records:
        ends[r["partition"]] = max(ends.get(r["partition"], 0), r["offset"] + 1)
    return ends


def wait_consumed(
    bootstrap: str, group: str, ends: dict[str, dict[int, int]], services: list[Service], timeout: float
) -> None:
    """Until `group` has committed every topic in `ends` up to those offsets (it processed everything).

    One client asks the broker every 0.5 s for the partitions in `ends` (a new client per topic per
    question cost the long waits of the parity tests more CPU than the question: `committed_offsets`)."""
    deadline = time.monotonic() + timeout
    behind: dict[str, tuple] = {}
    consumer = group_consumer(bootstrap, group)
    try:
        while time.monotonic() < deadline:
            behind = {}
            for topic, want in ends.items():
                if not want:  # an empty topic: nothing to wait for
                    continue
                have = committed_offsets(bootstrap, group, topic, consumer=consumer, partitions=sorted(want))
                if any(have.get(p, 0) < end for p, end in want.items()):
                    behind[topic] = (have, want)
            if not behind:
                return
            for s in services:
                assert s.proc.poll() is None, f"{s.name} died\n{s.tail()}"
            time.sleep(0.5)
    finally:
        consumer.close()
    logs = "\n".join(s.tail() for s in services)
    raise AssertionError(f"group {group} did not consume everything within {timeout} s: {behind}\n{logs}")
