"""What keeping the routed entry orders costs a backtest (``backtest.routed_orders``: the sink keeps each
routed entry's PENDING_NEW fields with its mid at send, the result their rows and their fills' rows):
the backtest's speed against the same backtest keeping nothing (baseline; target >= 0.98x), the bytes
``write_result_json`` writes (``result.json`` and ``routed_orders.json`` beside it) with and without
routed orders (target: at most +100 % or +100 KB, whichever is more),
and the time the report's routing TCA section adds to ``write_report``.

The frame is ``benchmarks.backtest_ab``'s (the cached synthetic session, the shipped strategies with
routed entries, one paper account per strategy, arms alternated ``--repeat`` times, best wall and median
CPU). The baseline's sink keeps nothing (``is_routed_entry`` answers no); both arms must give the
same trades.

Run: ``.venv/bin/python -m benchmarks.bench_routed_orders [--hours 30] [--repeat 3] [--quick]``
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from backtest import accounts
from backtest.report import write_report
from backtest.result_io import write_result_json
from benchmarks.backtest_ab import Arms, parse_args, session
from execution.config import EntryPolicy, ExecutorConfig

TARGET_RATIO = 0.98
TARGET_GROWTH, TARGET_GROWTH_BYTES = 1.0, 100_000
KEPT, NOT_KEPT = "kept", "not kept"


@contextmanager
def keeping_nothing() -> Iterator[None]:
    """Sinks made and fed inside keep no routed order (the baseline)."""
    keep = accounts.is_routed_entry
    accounts.is_routed_entry = lambda record: False
    try:
        yield
    finally:
        accounts.is_routed_entry = keep


def _report_seconds(result, out: Path) -> float:  # noqa: ANN001
    began = time.perf_counter()
    write_report(result, out, ("json", "md", "html"))
    return time.perf_counter() - began


def main() -> None:
    hours, repeat = parse_args(__doc__ or "", "runs per arm")
    config = ExecutorConfig().model_copy(update={"entry": EntryPolicy(kind="routed")})
    arms = Arms((NOT_KEPT, KEPT))
    with session(hours) as data:
        for baseline, result, first in arms.alternate(data, config, NOT_KEPT, KEPT, repeat, keeping_nothing):
            if result.trades != baseline.trades:
                raise SystemExit("keeping the orders changed the trades")
            if first:
                kept = result.routed_orders
                with tempfile.TemporaryDirectory() as tmp:
                    write_result_json(result, Path(tmp) / "a")
                    write_result_json(replace(result, routed_orders={}), Path(tmp) / "b")
                    with_orders, without = (sum(f.stat().st_size for f in (Path(tmp) / d).iterdir()) for d in "ab")
                    report_with = min(_report_seconds(result, Path(tmp) / f"r{i}") for i in range(3))
                    bare = replace(result, routed_orders={})
                    report_without = min(_report_seconds(bare, Path(tmp) / f"s{i}") for i in range(3))
                orders, fills = len(kept.get("orders", [])), len(kept.get("fills", []))
                growth = with_orders - without
                ok = growth <= max(TARGET_GROWTH * without, TARGET_GROWTH_BYTES)
                print(
                    f"  {result.signals} signals, {len(result.trades)} trades, {orders} routed orders, {fills} fills kept"
                )
                print(
                    f"  result files {without:,} -> {with_orders:,} bytes (+{growth:,}, {with_orders / without:.3f}x); "
                    f"target <= +{TARGET_GROWTH:.0%} or +{TARGET_GROWTH_BYTES:,} B: {'met' if ok else 'NOT met'}"
                )
                print(
                    f"  write_report (json, md, html) best of 3: {report_without * 1000:.0f} ms without the "
                    f"routing TCA section, {report_with * 1000:.0f} ms with it"
                )
        print(f"backtest keeping the routed orders against keeping none ({data.trades:,} trades, {hours:g} h):")
        arms.report(data.trades, NOT_KEPT, KEPT, TARGET_RATIO)


if __name__ == "__main__":
    main()
