"""Return freed file-sized buffers to the OS, so a long run's memory follows what it holds, not what it read.

Why this exists: reading a day file means a few buffers of tens of MB (the decompressed CSV, Arrow's
parse buffers), freed before the next file. Two allocators keep such memory after it is freed:

- glibc's ``malloc`` serves a large block by ``mmap`` and returns it with ``munmap`` on ``free``, but
  after the first such free it raises its mmap threshold (up to 32 MiB) so later blocks of that size
  come from the heap, where fragmentation keeps them resident. Fixing the threshold with
  ``mallopt(M_MMAP_THRESHOLD)`` turns the adjustment off (man 3 mallopt).
- pyarrow's default pool (mimalloc or jemalloc) caches freed pages for reuse; the system pool is plain
  ``malloc``, which, with the fixed threshold, unmaps them.

Measured (benchmarks/RESULTS.md, "Vision backtest: peak RSS against the range"): a cold backtest of
one symbol grew by ~16 MiB per day of range without this and stays flat with it, at no measurable cost
to parse speed. Nothing here changes results; on a C library other than glibc only the Arrow pool is
switched.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_MMAP_THRESHOLD = -3  # glibc <malloc.h>
MMAP_THRESHOLD_BYTES = 128 << 10  # glibc's initial threshold, kept: blocks from 128 KiB up are unmapped when freed

_done = False


def return_freed_memory() -> None:
    """Set the process's allocation policy above (once; safe to call again)."""
    global _done
    if _done:
        return
    _done = True
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc: nothing to set there
        pass
    else:
        mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
        mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
    import pyarrow as pa

    pa.set_memory_pool(pa.system_memory_pool())
