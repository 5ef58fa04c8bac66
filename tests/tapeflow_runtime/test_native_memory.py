"""`tapeflow_runtime.native_memory` in processes of their own (they change the process's allocator or
measure its resident memory): `live_service_allocator` maps a 256 KiB block on its own after a large
free, which without it comes from the heap (where its hole would stay); `release_freed_memory` hands
back what the heap keeps free below a block still in use, which freeing alone does not. The producer's
memory over a long run with and without the first: benchmarks/bench_producer_memory.py; the engine's
and executor's over rollovers with and without the second: RESULTS.md "Engine and executor memory per
rollover"."""

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

TRIM_SCRIPT = """
import json, sys
from tapeflow_runtime.native_memory import release_freed_memory

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096

blocks = [bytearray(16 << 10) for _ in range(4096)]  # 64 MiB of 16 KiB blocks: from the heap
top = bytearray(16 << 10)  # allocated last and kept: the heap cannot shrink from its top
del blocks
before = rss()
released = release_freed_memory() if sys.argv[1] == "trim" else False
print(json.dumps({"released": released, "mib_returned": (before - rss()) >> 20}))
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
    done = subprocess.run([sys.executable, "-c", script, mode], capture_output=True, text=True, env=base | env,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return done


def run(mode: str, script: str = SCRIPT, **env: str) -> dict:
    return json.loads(spawn(mode, script, **env).stdout)


def test_after_a_large_free_a_live_service_maps_large_blocks_on_their_own():
    assert run("default") == {"set": None, "mapped": 0}  # glibc's dynamic threshold: from the heap
    assert run("live") == {"set": 64 << 10, "mapped": 1}


def test_the_operators_own_malloc_setting_wins():
    assert run("live", MALLOC_MMAP_THRESHOLD_="1048576") == {"set": None, "mapped": 0}


def test_freed_memory_below_a_live_block_goes_back_to_the_os_only_when_released():
    """What a rollover leaves in the engine and the executor: the old epoch's memory freed, but held by
    glibc because later blocks sit above it (measured: ~1 MB a rollover before the release)."""
    kept = run("none", TRIM_SCRIPT)
    released = run("trim", TRIM_SCRIPT)
    assert kept == {"released": False, "mib_returned": 0}
    assert released["released"] is True and released["mib_returned"] >= 60  # of the 64 MiB freed


ARENAS_SCRIPT = """
import ctypes, sys, threading
from tapeflow_runtime.native_memory import few_malloc_arenas

set_to = few_malloc_arenas() if sys.argv[1] == "few" else None
held, started = [], threading.Barrier(8)

def allocate():
    started.wait()  # all alive at once: none can inherit an arena another one left
    held.append(bytearray(64 << 10))  # a malloc of the thread's own (above pymalloc's small objects)
    started.wait()

threads = [threading.Thread(target=allocate) for _ in range(8)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(set_to, flush=True)
ctypes.CDLL("libc.so.6").malloc_stats()  # one "Arena N:" block per arena, on stderr
"""


def arenas(mode: str, **env: str) -> tuple[str, int]:
    done = spawn(mode, ARENAS_SCRIPT, **env)
    return done.stdout.strip(), done.stderr.count("Arena ")


def test_threads_of_a_service_with_few_arenas_share_two():
    """The executor's Kafka clients' threads each took an arena of their own, up to 16 on 2 cores."""
    assert arenas("default")[1] > 2  # glibc's default: a new thread gets a new arena
    assert arenas("few") == ("2", 2)
    assert arenas("few", MALLOC_ARENA_MAX="4") == ("None", arenas("default", MALLOC_ARENA_MAX="4")[1])
