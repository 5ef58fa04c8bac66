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
engine would then be mapped and unmapped too, paying a page fault for every page of each.

Figures: benchmarks/RESULTS.md ("Vision backtest: peak RSS against the range"). Nothing here
changes results; where the C library is not glibc, only the Arrow pool is switched.

A live service is the other case (``live_service_allocator``): it runs for days, and each large free
(a warm start's archive or REST page, for one) can raise glibc's dynamic mmap threshold, after which
larger blocks of the streaming come from the heap and the holes they leave are kept. On
``tapeflow produce`` (``benchmarks/bench_producer_memory.py``, RESULTS.md "The producer's slow memory
growth"): resident memory grew ~9 MB an hour with the dynamic threshold and stayed flat with it fixed
at 64 KiB, for 4-7 % more CPU (the mapping's page faults). Which blocks fragmented the heap was not
traced.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Iterator
from contextlib import contextmanager

M_MMAP_THRESHOLD = -3  # glibc <malloc.h>
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
