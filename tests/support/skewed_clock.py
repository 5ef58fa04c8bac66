"""A process's wall clock skewed by an offset read from a file, for the clock-skew fault test.

Why not libfaketime (tried first, and what the fault suite used): it skews every clock read of the
process, librdkafka's too, and librdkafka's timed waits take their deadlines from the wall clock
(`cnd_timedwait` on an absolute realtime deadline). Set behind the real clock, every such deadline is
already past, so each of its threads spins: the executor burned 1.3-1.8 cores for the whole test
(120-180 CPU-s of a 90-s test, mostly system time in `futex`), and larger offsets kept librdkafka from
fetching metadata at all. The executor signs its exchange requests with Python's `time.time()`
(`execution.binance_signing`), and its HTTP `Date` header comes from the same clock, so skewing that
clock is what a drifting host clock does to everything the test checks, without the spin.
"""

from __future__ import annotations

import time
from pathlib import Path

#: how long a read offset is used before the file is read again
REREAD_S = 0.05


def parse_offset(text: str) -> float:
    """The offset in seconds from ``"-7s"``, ``"+4.5s"`` (the format the fault harness writes)."""
    text = text.strip()
    if not text.endswith("s"):
        raise ValueError(f"clock offset {text!r}: expected seconds like '-7s' or '+4.5s'")
    return float(text[:-1])


def install(path: str | Path) -> None:
    """From now on this process's ``time.time`` and ``time.time_ns`` are the real clock plus the
    offset in ``path``, re-read at most every `REREAD_S` seconds (a step shows within that)."""
    offset_file = Path(path)
    real_time, real_time_ns, monotonic = time.time, time.time_ns, time.monotonic
    state = {"offset": parse_offset(offset_file.read_text()), "read_at": monotonic()}

    def offset() -> float:
        now = monotonic()
        if now - state["read_at"] >= REREAD_S:
            try:
                state["offset"] = parse_offset(offset_file.read_text())
            except (OSError, ValueError):
                pass  # a file being rewritten: the previous offset until the next read
            state["read_at"] = now
        return state["offset"]

    time.time = lambda: real_time() + offset()  # type: ignore[assignment]
    time.time_ns = lambda: real_time_ns() + int(offset() * 1e9)  # type: ignore[assignment]
