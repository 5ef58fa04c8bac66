"""Fault suite with long faults: each registered case injects its fault for longer than the
tests do (tests/faults/ run the same runners with short ones) and prints one table row per fault:

    fault | duration_s | trades_in | trades_out | duplicates | lost | orders_sent | orders_expected | recover_s

``duration_s`` is the fault's length (or size: see each runner's docstring), ``recover_s`` the time from
the fault clearing to outputs flowing again; orders columns are empty where no order is involved.

    .venv/bin/python -m benchmarks.bench_faults            # every case, long faults
    .venv/bin/python -m benchmarks.bench_faults --short    # the tests' durations
    .venv/bin/python -m benchmarks.bench_faults --only executor_clock_skew

Adding a case: append a `Case` to ``REGISTRY``: a name and ``run(workdir, short, bootstrap) -> list of
rows`` (dicts with the keys of ``tests.support.faults_process.ROW_KEYS``; extra keys are ignored).
``bootstrap`` is a Kafka address for cases that need only a broker (the embedded Kafka started for the
run); cases that start a whole stack ignore it.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.embedded_broker import broker
from tests.support.faults_process import ROW_KEYS


@dataclass(frozen=True)
class Case:
    name: str
    run: Callable[[Path, bool, str], list[dict[str, Any]]]
    needs_broker: bool = False


# --------------------------------------------------------------------------- process faults
def _clock_skew(workdir: Path, short: bool, bootstrap: str) -> list[dict[str, Any]]:
    from tests.support.faults_process import executor_clock_skew

    if short:
        return [executor_clock_skew(bootstrap, workdir, start_skew_s=-7.0, step_s=2.0)]
    # longer steps: the wall clock only (`tests.support.skewed_clock`), so any step works
    return [executor_clock_skew(bootstrap, workdir, start_skew_s=-7.0, step_s=4.0)]


def _stack_process_faults(workdir: Path, short: bool, bootstrap: str) -> list[dict[str, Any]]:
    from tests.support.faults_process import stack_process_faults

    if short:
        return stack_process_faults(workdir / "home", stop_s=8.0, db_stall_s=7.0, duration_s=50.0, trades_per_s=40.0)
    return stack_process_faults(workdir / "home", stop_s=60.0, db_stall_s=120.0, duration_s=300.0, trades_per_s=100.0)


def _feed_faults(workdir: Path, short: bool, bootstrap: str) -> list[dict[str, Any]]:
    from tests.support.faults_feed import bench_feed_faults

    return bench_feed_faults(workdir, short, bootstrap)


def _broker_killed(workdir: Path, short: bool, bootstrap: str) -> list[dict[str, Any]]:
    from tests.support.faults_links import broker_killed

    if short:  # the test runs this after the link faults, on their stack
        return broker_killed(workdir / "home", kills=1, duration_s=40.0, trades_per_s=40.0, stop_timeout_s=3.0)
    # longer: killed three times in a row (the supervisor's backoff grows 1, 2, 4 s), then once more after
    # 20 s SIGSTOPped (the producer's buffer fills with trades the broker never acknowledged)
    rows = broker_killed(workdir / "home", kills=3, duration_s=180.0, trades_per_s=100.0)
    return rows + broker_killed(
        workdir / "home-stalled", kills=1, stall_before_kill_s=20.0, duration_s=120.0, trades_per_s=100.0
    )


def _link_faults(workdir: Path, short: bool, bootstrap: str) -> list[dict[str, Any]]:
    from tests.support.faults_links import sink_db_link_faults

    if short:
        return sink_db_link_faults(
            workdir / "home",
            delay_ms=200.0,
            delay_s=3.0,
            bytes_per_s=20_000.0,
            throttle_s=3.0,
            loss=0.1,
            loss_s=3.0,
            partition_s=15.0,
            duration_s=60.0,
            trades_per_s=40.0,
        )
    return sink_db_link_faults(
        workdir / "home",
        delay_ms=500.0,
        delay_s=60.0,
        bytes_per_s=10_000.0,
        throttle_s=60.0,
        loss=0.2,
        loss_s=60.0,
        partition_s=120.0,
        duration_s=420.0,
        trades_per_s=100.0,
    )


def _database_disk_full(workdir: Path, short: bool, bootstrap: str) -> list[dict[str, Any]]:
    from tests.support.faults_disk import database_disk_full

    if short:
        return database_disk_full(workdir / "home", full_s=8.0, duration_s=32.0)
    return database_disk_full(workdir / "home", full_s=120.0, duration_s=240.0, trades_per_s=100.0)


def _broker_restart(workdir: Path, short: bool, bootstrap: str) -> list[dict[str, Any]]:
    from tests.support.faults_broker import broker_restart_after_sigkill

    if short:
        return [broker_restart_after_sigkill(workdir / "home", preload=200_000, during=50_000)]
    # a day-ish of md.trades (BTC: ~2 M aggTrades a day at 15-40 trades/s, ~100 bytes each), then the kill
    return [broker_restart_after_sigkill(workdir / "home", preload=2_000_000, during=200_000, pad=100)]


def _broker_mid_replay(workdir: Path, short: bool, bootstrap: str) -> list[dict[str, Any]]:
    from tests.support.faults_broker import broker_killed_mid_replay

    if short:
        return broker_killed_mid_replay(workdir / "home", duration_s=1800.0, trades_per_s=40.0)
    return broker_killed_mid_replay(workdir / "home", duration_s=7200.0, trades_per_s=40.0)


def _broker_disk_full(workdir: Path, short: bool, bootstrap: str) -> list[dict[str, Any]]:
    from tests.support.faults_broker import broker_disk_full

    if short:
        return broker_disk_full(workdir / "home", size="64m", full_s=8.0, duration_s=60.0)
    return broker_disk_full(workdir / "home", size="64m", full_s=120.0, duration_s=240.0)


REGISTRY: list[Case] = [
    Case("executor_clock_skew", _clock_skew, needs_broker=True),
    Case("stack_process_faults", _stack_process_faults),  # sigstop_engine_sink, db_backend_killed, db_unresponsive
    # exchange-feed faults on one live producer run with the sink (its own broker and database):
    # rest_418_ban, depth_gap, duplicate_frames, out_of_order_frames, ws_close_1006, tcp_reset, rest_429,
    # feed_stall, ws_half_open, and the whole run's md.trades and trades table
    Case("feed_faults", _feed_faults),
    # the embedded Kafka SIGKILLed while trades flow live (the supervisor restarts it; Kafka recovers its
    # log, keeps topics, offsets and groups; the clients reconnect): broker_sigkill
    Case("broker_killed", _broker_killed),
    # Kafka alone, its log preloaded, SIGKILLed mid-write: kill / restart to healthy, every
    # acknowledged record once (broker_sigkill_restart_<preload>); the stack's broker killed mid-replay at
    # max speed (broker_sigkill_mid_replay); its log disk filled (broker_disk_full, root only)
    Case("broker_restart", _broker_restart),
    Case("broker_mid_replay", _broker_mid_replay),
    Case("broker_disk_full", _broker_disk_full),
    # the sink's PostgreSQL link through a TCP proxy: link_delay, link_throttle, link_loss (iptables), and
    # db_partition (a network namespace's veth link down)
    Case("link_faults", _link_faults),
    # the embedded PostgreSQL's cluster on a tmpfs filled to the last byte: database_disk_full
    Case("database_disk_full", _database_disk_full),
]


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(ROW_KEYS) + " |", "|" + "---|" * len(ROW_KEYS)]
    lines += ["| " + " | ".join(_cell(r.get(k)) for k in ROW_KEYS) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--short", action="store_true", help="the tests' fault durations")
    ap.add_argument("--only", action="append", default=[], help="case name (repeatable)")
    ap.add_argument("--bootstrap", default=None, help="an existing Kafka; default the embedded Kafka")
    ap.add_argument("--detail", action="store_true", help="also print each row's detail (without logs)")
    args = ap.parse_args(argv)
    cases = [c for c in REGISTRY if not args.only or c.name in args.only]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="tapeflow-bench-faults-") as tmp:
        root = Path(tmp)
        with contextlib.ExitStack() as stack:
            bootstrap = ""
            if any(c.needs_broker for c in cases):
                bootstrap = stack.enter_context(broker(args.bootstrap, root / "broker"))
            for case in cases:
                t0 = time.monotonic()
                try:
                    got = case.run(root / case.name, args.short, bootstrap)
                except Exception as exc:  # noqa: BLE001 - one failing case must not hide the others
                    first_line = (str(exc).strip().splitlines() or [""])[0]
                    got = [{"fault": f"{case.name}: FAILED {type(exc).__name__}: {first_line}"[:200]}]
                for r in got:
                    print({k: r.get(k) for k in ROW_KEYS}, f"({time.monotonic() - t0:.0f} s)", flush=True)
                if args.detail and got:
                    detail = {k: v for k, v in got[0].get("detail", {}).items() if "log" not in k}
                    print("detail:", detail, flush=True)
                rows += got
    print(table(rows))
    return 0 if all(r.get("lost") == 0 and r.get("duplicates") == 0 for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
