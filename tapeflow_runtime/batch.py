"""Garbage-collector thresholds for batch runs (a backtest, a research feature store) and for the
services that decode many records a second (the engine worker).

Why: a batch run keeps an hour or more of inputs alive (hundreds of thousands of record dicts) and
creates millions of short-lived containers (a book record's level dicts, executor objects). CPython's
default thresholds, (700, 10, 10), run a collection of the youngest generation every 700 container
allocations and promote survivors, so the collector keeps walking the live inputs: on the synthetic
source it took about 28 % of the time spent generating records (`benchmarks/RESULTS.md`). Nothing a
run allocates depends on early cycle collection; raising the first threshold makes collections rarer
(each still runs, so memory held by cycles is still freed, later). Batch commands use it for the
length of the run.

A streaming service pays the same way: the engine worker reads a fetch of thousands of records, and
aiokafka makes a container per record, so at 250 k records/s the default thresholds collected the
youngest generation hundreds of times a second and kept walking what survived into the older ones
(half of the CPU of reading records, measured with `py-spy --native`; `benchmarks/RESULTS.md`).
`streaming_gc` sets a service's collector once, after its start-up: what exists by then (modules,
compiled kernels, configuration: alive for the whole process) is frozen out of every collection, and
the youngest generation is collected every `STREAMING_GEN0_THRESHOLD` allocations.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

BATCH_GEN0_THRESHOLD = 100_000
#: a service's youngest generation: a fetch's worth of records between collections, not 700
STREAMING_GEN0_THRESHOLD = 50_000


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


def streaming_gc(gen0: int = STREAMING_GEN0_THRESHOLD) -> None:
    """A long-running service's collector, set once after its start-up: the objects alive now moved to
    the permanent generation (``gc.freeze``: never walked again), the youngest generation collected
    every ``gen0`` container allocations (the older generations' thresholds unchanged)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(max(gen0, gc.get_threshold()[0]), *gc.get_threshold()[1:])
