"""`tapeflow_runtime.native_memory` in processes of their own (they change the process's allocator):
`live_service_allocator` maps a 256 KiB block on its own after a large free, which without it comes
from the heap (where its hole would stay). The producer's memory over a long run with and without it:
benchmarks/bench_producer_memory.py."""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import subprocess
import sys

import pytest

SCRIPT = """
import ctypes, json, sys
from tapeflow_runtime.native_memory import live_service_allocator

class Mallinfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                 "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Mallinfo2
set_to = live_service_allocator() if sys.argv[1] == "live" else None
big = bytearray(4 << 20)  # mapped (above the initial 128 KiB threshold); freeing it raises a dynamic threshold
del big
before = libc.mallinfo2().hblks
held = bytearray(256 << 10)
print(json.dumps({"set": set_to, "mapped": libc.mallinfo2().hblks - before}))
"""


def _glibc_with_mallinfo2() -> bool:
    try:
        return hasattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), "mallinfo2")
    except OSError:
        return False


pytestmark = pytest.mark.skipif(not _glibc_with_mallinfo2(), reason="glibc's mallinfo2 is not available here")


def spawn(mode: str, script: str, **env: str) -> subprocess.CompletedProcess:
    """``script`` in a fresh interpreter, without the caller's MALLOC_ settings (plus ``env``)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    done = subprocess.run(
        [sys.executable, "-c", script, mode], capture_output=True, text=True, env=base | env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done


def run(mode: str, script: str = SCRIPT, **env: str) -> dict:
    return json.loads(spawn(mode, script, **env).stdout)


def test_after_a_large_free_a_live_service_maps_large_blocks_on_their_own():
    assert run("default") == {"set": None, "mapped": 0}  # glibc's dynamic threshold: from the heap
    assert run("live") == {"set": 64 << 10, "mapped": 1}


def test_the_operators_own_malloc_setting_wins():
    assert run("live", MALLOC_MMAP_THRESHOLD_="1048576") == {"set": None, "mapped": 0}
