"""Return freed file-sized buffers to the OS, so a long run's memory follows what it holds, not what it read.

Why this exists: reading a day file means a few buffers of tens of MB (the decompressed CSV, Arrow's
parse buffers, the sorted columns), freed before the next file. Two allocators keep such memory:

- pyarrow's default pool (mimalloc or jemalloc) caches freed pages for reuse; ``system_arrow_pool``
  switches Arrow to plain ``malloc``;
- glibc's ``malloc`` raises its mmap threshold after the first large free (up to 32 MiB), so later
  file-sized blocks come from the heap, where fragmentation keeps them resident. Inside
  ``file_buffers_unmapped`` blocks from 128 KiB up are mapped on their own, so freeing them unmaps
  them (``mallopt(M_MMAP_THRESHOLD)``, man 3 mallopt); on leaving, the threshold is set to 32 MiB (the
  value the adjustment converges to) and the heap's free pages are handed back (``malloc_trim``).

Why only around a file's parse and not for the whole process: every hour-sized temporary array of the
engine would then be mapped and unmapped too, measured at +1.5 s of system time (page faults) per
10 M trades of a warm backtest.

Measured in benchmarks/RESULTS.md ("Vision backtest: peak RSS against the range"). Nothing here
changes results; where the C library is not glibc, only the Arrow pool is switched.

A live service is the other case (``live_service_allocator``): it runs for days, and each large free
(a warm start's archive or REST page, for one) can raise glibc's dynamic mmap threshold, after which
larger blocks of the streaming come from the heap and the holes they leave are kept. Measured on
``tapeflow produce`` (``benchmarks/bench_producer_memory.py``, RESULTS.md "The producer's slow memory
growth"): resident memory grew ~9 MB an hour with the dynamic threshold and stayed flat with it fixed
at 64 KiB, for 4-7 % more CPU (the mapping's page faults). Which blocks fragmented the heap was not
traced.

The engine and the executor on the embedded broker are the third case (``release_freed_memory``): they
follow the topic epochs in one process, so every rollover builds a new Faust app / executor service
with new Kafka clients (librdkafka's threads each allocate in an arena of their own) and drops the
old ones. Measured (RESULTS.md "Engine and executor memory per rollover"): once the engine's one leak
was gone (a decoder cache that kept every epoch's serde), what each rollover left was memory glibc
kept free in its arenas; the services trim it once a rollover is done.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Iterator
from contextlib import contextmanager

M_MMAP_THRESHOLD = -3  # glibc <malloc.h>
M_ARENA_MAX = -8
FEW_ARENAS = 2
SMALL_THRESHOLD, LARGE_THRESHOLD = 128 << 10, 32 << 20
LIVE_THRESHOLD = 64 << 10  # what bench_producer_memory measured

_libc: ctypes.CDLL | None = None
_pool_set = False


def system_arrow_pool() -> None:
    """Arrow allocates with ``malloc`` (once per process; safe to call again)."""
    global _pool_set
    if not _pool_set:
        import pyarrow as pa

        pa.set_memory_pool(pa.system_memory_pool())
        _pool_set = True


def _glibc() -> ctypes.CDLL | None:
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        except OSError:
            return None
    return _libc if hasattr(_libc, "mallopt") and hasattr(_libc, "malloc_trim") else None


@contextmanager
def file_buffers_unmapped() -> Iterator[None]:
    """Large blocks allocated inside are unmapped when freed; the heap is trimmed on leaving."""
    libc = _glibc()
    if libc is None:
        yield
        return
    libc.mallopt(M_MMAP_THRESHOLD, SMALL_THRESHOLD)
    try:
        yield
    finally:
        libc.mallopt(M_MMAP_THRESHOLD, LARGE_THRESHOLD)
        libc.malloc_trim(0)


def live_service_allocator() -> int | None:
    """For a long-running service: glibc's mmap threshold fixed at 64 KiB, so blocks from there up are
    mapped and unmapped on their own and the threshold no longer rises after a large free (nor the
    trim threshold with it). Returns the threshold set, or None: not glibc, or ``MALLOC_MMAP_THRESHOLD_``
    in the environment (the operator's own setting wins)."""
    libc = _glibc()
    if libc is None or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return None
    return LIVE_THRESHOLD if libc.mallopt(M_MMAP_THRESHOLD, LIVE_THRESHOLD) == 1 else None


def few_malloc_arenas(arenas: int = FEW_ARENAS) -> int | None:
    """For a service that makes new Kafka clients at every topic-epoch rollover: at most ``arenas``
    malloc arenas (``mallopt(M_ARENA_MAX)``; glibc's default is 8 per core). Call it before the first
    client starts. Returns the limit set, or None: not glibc, or ``MALLOC_ARENA_MAX`` in the environment
    (the operator's own setting wins).

    Why: each librdkafka thread allocates in an arena of its own, and a freed arena is handed to the
    next thread that starts. Every rollover's new clients thus touch arena after arena until all 16
    (2 cores) hold their own high-water mark of free-but-kept pages. Measured on the executor in a
    65-minute endurance run (RESULTS.md "The executor's arenas"): 15 arenas of 2-8 MB private pages
    each, 114 MB anonymous memory against 17 MB of main heap, still rising at minute 48."""
    libc = _glibc()
    if libc is None or "MALLOC_ARENA_MAX" in os.environ:
        return None
    return arenas if libc.mallopt(M_ARENA_MAX, arenas) == 1 else None


def release_freed_memory() -> bool:
    """Hand the free pages of every malloc arena back to the OS (``malloc_trim(0)``, man 3 malloc_trim):
    once per topic-epoch rollover of a service that follows the epochs in-process, after the old
    epoch's clients and app are gone. Returns whether glibc released anything (False elsewhere too).
    A trim costs milliseconds for a heap of this size; nothing here changes results."""
    libc = _glibc()
    return bool(libc.malloc_trim(0)) if libc is not None else False
