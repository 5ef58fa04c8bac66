"""Memory samples of the engine and executor processes of a stack, for ``benchmarks.bench_rollover_memory``.

Put this directory first on ``PYTHONPATH`` and set ``TAPEFLOW_MEMSAMPLE_DIR``: every ``tapeflow engine`` and
``tapeflow execute`` process started with that environment (the stack's services inherit it) appends one
JSON line every ``TAPEFLOW_MEMSAMPLE_EVERY`` seconds (default 15) to ``<dir>/<engine|execute>-<pid>.jsonl``:
resident memory (``/proc/self/statm``), glibc's ``mallinfo2`` summed over its arenas (in use, free but
kept), the interpreter's allocated blocks (``sys.getallocatedblocks``: Python objects), threads, open
files and CPU seconds. ``TAPEFLOW_MEMSAMPLE_TRACE=1`` also starts ``tracemalloc`` (5 frames) after
``TAPEFLOW_MEMSAMPLE_TRACE_DELAY`` seconds (default 120: tracing from the start slows the engine's start
past the supervisor's health timeout) and records the 25 allocation sites that grew most since the
tenth sample.

Hand-rolled because it has to run inside services the supervisor starts, without changing them; it
never walks the object graph (``gc.get_objects`` from a second thread crashed an engine in a tuple
under construction: ``SystemError: Objects/tupleobject.c:927``). Measurement only: nothing in tapeflow
imports it.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
import threading
import time


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                 "fsmblks", "uordblks", "fordblks", "keepcost")]


def _sample_forever(out: str, every: float) -> None:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _Mallinfo2
    except (OSError, AttributeError):
        libc = None
    trace = os.environ.get("TAPEFLOW_MEMSAMPLE_TRACE") == "1"
    if trace:
        import tracemalloc

        time.sleep(float(os.environ.get("TAPEFLOW_MEMSAMPLE_TRACE_DELAY", "120")))
        tracemalloc.start(5)
    base = None
    n = 0
    while True:
        time.sleep(every)
        n += 1
        try:
            with open("/proc/self/statm") as f:
                rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            rec = {"t": time.time(), "home": os.environ.get("TAPEFLOW_HOME"), "rss": rss, "blocks": sys.getallocatedblocks(),
                   "threads": threading.active_count(), "fds": len(os.listdir("/proc/self/fd")),
                   "cpu": sum(os.times()[:2])}
            if libc is not None:
                mi = libc.mallinfo2()
                rec["malloc_in_use"], rec["malloc_free"], rec["malloc_arena"] = mi.uordblks, mi.fordblks, mi.arena
            if trace:
                snap = tracemalloc.take_snapshot()
                rec["traced"] = tracemalloc.get_traced_memory()[0]
                if base is None and n >= 10:
                    base = snap
                if base is not None:
                    rec["grew"] = [(str(s.traceback[0]), s.size_diff, s.count_diff)
                                   for s in snap.compare_to(base, "lineno")[:25]]
            with open(out, "a") as f:
                f.write(json.dumps(rec) + "\n")
        except Exception as exc:  # noqa: BLE001 - a sample lost is not worth the service
            with open(out, "a") as f:
                f.write(json.dumps({"t": time.time(), "error": repr(exc)}) + "\n")


def _start() -> None:
    directory = os.environ.get("TAPEFLOW_MEMSAMPLE_DIR")
    if not directory:
        return
    try:
        with open("/proc/self/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return
    which = next((w for w in ("engine", "execute") if w.encode() in argv), None)
    if which is None or b"tapeflow" not in argv:
        return
    out = os.path.join(directory, f"{which}-{os.getpid()}.jsonl")
    every = float(os.environ.get("TAPEFLOW_MEMSAMPLE_EVERY", "15"))
    threading.Thread(target=_sample_forever, args=(out, every), daemon=True, name="memsample").start()


_start()
