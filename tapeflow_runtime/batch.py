"""Garbage-collector thresholds for batch runs (a backtest, a research feature store).

Why: a batch run keeps an hour or more of inputs alive (hundreds of thousands of record dicts) and
creates millions of short-lived containers (a book record's level dicts, executor objects). CPython's
default thresholds, (700, 10, 10), run a collection of the youngest generation every 700 container
allocations and promote survivors, so the collector keeps walking the live inputs: on the synthetic
source it took about 28 % of the time spent generating records (`benchmarks/RESULTS.md`). Nothing a
run allocates depends on early cycle collection; raising the first threshold makes collections rarer
(each still runs, so memory held by cycles is still freed, later). Only batch commands use this, for
the length of the run; long-running services keep the interpreter's defaults.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

BATCH_GEN0_THRESHOLD = 100_000


@contextmanager
def batch_gc(gen0: int = BATCH_GEN0_THRESHOLD) -> Iterator[None]:
    """Within the block, the youngest generation is collected every ``gen0`` container allocations
    (the older generations' thresholds unchanged); the previous thresholds come back after it."""
    before = gc.get_threshold()
    gc.set_threshold(max(gen0, before[0]), *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)
