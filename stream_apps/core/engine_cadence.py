"""The engine's evaluation points: where, between two clock readings, evaluations fall.

Two kinds (see ``engine``): the end of every second with pending trades, and the multiples of the
evaluation interval inside the spans where some input is at most ``idle_eval_limit_ms`` old. Both
depend on the inputs only (never on how they were batched), which keeps the output independent of
batching.
"""

from __future__ import annotations

import numpy as np

from .engine_inputs import PendingInputs
from .frame import distinct_sorted


def evaluation_points(
    low: int, high: int, inputs: PendingInputs, periodic: bool, interval_ms: int, idle_limit_ms: int
) -> np.ndarray:
    """Evaluation points in ``(low, high]``, ascending; the interval's multiples only if ``periodic``
    (some symbol has a state or pending trades)."""
    if high <= low:
        return np.empty(0, dtype=np.int64)
    parts = []
    for batch in inputs.trades.values():
        ends = (distinct_sorted(batch.time_ms // 1000) + 1) * 1000  # pending trades are time-ordered
        parts.append(ends[(ends > low) & (ends <= high)])
    if periodic:
        for start, end in active_spans(inputs, idle_limit_ms):
            begin, stop = max(low, start), min(high, end)
            if stop > begin:
                parts.append(np.arange((begin // interval_ms + 1) * interval_ms, stop + 1, interval_ms, dtype=np.int64))
    if not parts:
        return np.empty(0, dtype=np.int64)
    return distinct_sorted(np.sort(np.concatenate(parts), kind="stable"))


def active_spans(inputs: PendingInputs, limit_ms: int) -> list[tuple[int, int]]:
    """Merged ``[t, t + limit_ms]`` over the times of every input at hand (applied ones are
    represented by the newest): where periodic evaluation points may fall."""
    parts = [inputs.event_times()]
    parts += [batch.time_ms for batch in inputs.trades.values()]
    if inputs.applied_ms is not None:
        parts.append(np.asarray([inputs.applied_ms], dtype=np.int64))
    times = np.sort(np.concatenate(parts), kind="stable")  # sorted runs: merged in linear time
    if len(times) == 0:
        return []
    breaks = np.flatnonzero(np.diff(times) > limit_ms)  # a silence longer than the limit ends a span
    starts = np.concatenate(([0], breaks + 1))
    ends = np.concatenate((breaks, [len(times) - 1]))
    return [(int(times[a]), int(times[b]) + limit_ms) for a, b in zip(starts, ends)]
