"""Walk-forward windows: ``train=30d,test=7d,step=7d`` parsed into rolling train/test ranges.

A window trains on ``[train_start, train_end)`` and tests on ``[test_start, test_end)``; windows roll
by ``step``. Two guards keep the future out of a training result:

- purge: a trade counts for a range only if it is decided inside the range AND its outcome is known
  before the range ends (entry >= start and exit < end): a position opened in training and closed in
  the test period would otherwise carry test-period prices into the choice of parameters;
- embargo: the test period starts ``embargo`` after the training period ends (default: the longest
  time a position can stay open, so no training trade overlaps the test period, and features of the
  first test evaluations were not read by training trades).

A final hold-out (``holdout=7d``) is cut off the end before any window is laid out: no search
touches it; the chosen configuration is evaluated on it once, at the end.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from stream_apps.core.durations import format_duration_ms, parse_duration_ms

_KEYS = ("train", "test", "step", "embargo", "holdout")


@dataclass(frozen=True)
class WalkForwardSpec:
    train_ms: int
    test_ms: int
    step_ms: int
    embargo_ms: int = 0
    holdout_ms: int = 0

    def __str__(self) -> str:
        parts = [
            f"train={format_duration_ms(self.train_ms)}",
            f"test={format_duration_ms(self.test_ms)}",
            f"step={format_duration_ms(self.step_ms)}",
        ]
        if self.embargo_ms:
            parts.append(f"embargo={format_duration_ms(self.embargo_ms)}")
        if self.holdout_ms:
            parts.append(f"holdout={format_duration_ms(self.holdout_ms)}")
        return ",".join(parts)


def parse_walk_forward(text: str, default_embargo_ms: int = 0) -> WalkForwardSpec:
    """``train=30d,test=7d,step=7d[,embargo=4h][,holdout=7d]``; ``step`` defaults to ``test``."""
    values: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        match = re.fullmatch(r"([a-z]+)\s*=\s*(\S+)", part)
        if not match or match.group(1) not in _KEYS:
            raise ValueError(f"walk-forward: {part!r} is not one of {', '.join(k + '=DURATION' for k in _KEYS)}")
        key = match.group(1)
        if key in values:
            raise ValueError(f"walk-forward: {key} given twice")
        if key in ("embargo", "holdout") and match.group(2) == "0":
            values[key] = 0
            continue
        try:
            values[key] = parse_duration_ms(match.group(2))
        except ValueError as error:
            raise ValueError(f"walk-forward: {key}: {error}") from None
    for key in ("train", "test"):
        if key not in values:
            raise ValueError(f"walk-forward: {key}=DURATION is required (e.g. train=30d,test=7d,step=7d)")
    return WalkForwardSpec(
        values["train"],
        values["test"],
        values.get("step", values["test"]),
        values.get("embargo", default_embargo_ms),
        values.get("holdout", 0),
    )


@dataclass(frozen=True)
class Window:
    index: int
    train_start: int
    train_end: int  # exclusive
    test_start: int  # train_end + embargo
    test_end: int  # exclusive

    def contains_train(self, entry_ms: int, exit_ms: int) -> bool:
        """A trade counts for training when decided in the training range and closed before its end."""
        return self.train_start <= entry_ms and exit_ms < self.train_end

    def contains_test(self, entry_ms: int, exit_ms: int) -> bool:
        return self.test_start <= entry_ms and exit_ms < self.test_end


def rolling_windows(spec: WalkForwardSpec, from_ms: int, to_ms: int) -> tuple[list[Window], tuple[int, int] | None]:
    """Windows over ``[from_ms, to_ms - holdout)``, and the hold-out range (or None).

    The first window trains on the first ``train``; each next one starts ``step`` later; a window is
    laid out only if its whole test period fits before the hold-out.
    """
    end = to_ms - spec.holdout_ms
    holdout = (end, to_ms) if spec.holdout_ms else None
    windows = []
    start = from_ms
    while True:
        train_end = start + spec.train_ms
        test_start = train_end + spec.embargo_ms
        test_end = test_start + spec.test_ms
        if test_end > end:
            break
        windows.append(Window(len(windows), start, train_end, test_start, test_end))
        start += spec.step_ms
    if not windows:
        need = format_duration_ms(spec.train_ms + spec.embargo_ms + spec.test_ms + spec.holdout_ms)
        raise ValueError(f"walk-forward: the range is shorter than one window ({need} with the hold-out)")
    return windows, holdout
