"""Cross-validation for labels that look into the future: purged K-fold with an embargo, and walk-forward.

Why: a label of an evaluation at ``t0`` is decided by prices up to ``t1`` (``y_binary_60m``: one hour
later), and evaluations come every second, so neighbouring rows share most of their label window and
most of their features. A shuffled K-fold puts those neighbours on both sides of a split and a model
scores well by remembering them: its out-of-fold AUC measures memory, not skill (tapeflow's tests show
it on data with no effect at all). Purged K-fold (López de Prado, *Advances in Financial Machine
Learning*, ch. 7):

- folds are contiguous blocks of rows in ``t0`` order (equal counts), never shuffled;
- purge: a training row is dropped when its label interval ``[t0, t1]`` overlaps the test fold's span
  ``[first t0, last t1]`` of the test rows (its label saw prices the test rows' labels see);
- embargo: a training row is also dropped when its ``t0`` falls within ``embargo_ms`` after the span
  (features of rows just after the test fold are built from the test period's trades).

``PurgedKFold`` follows scikit-learn's splitter protocol (``split(X, y, groups)`` yields index arrays,
``get_n_splits``), so ``cross_val_score(..., cv=PurgedKFold(...))`` works. ``walk_forward_splits`` lays
``windows.rolling_windows`` over the rows: a window trains on rows whose whole label interval lies in
its training range (the same purge as the strategy walk-forward) and tests on the rows of its test range.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from .windows import WalkForwardSpec, Window, rolling_windows


def _intervals(t0: Any, t1: Any) -> tuple[np.ndarray, np.ndarray]:
    start = np.asarray(t0, dtype=np.int64)
    end = np.asarray(t1, dtype=np.int64)
    if start.shape != end.shape or start.ndim != 1:
        raise ValueError("t0 and t1 must be one-dimensional and of one length")
    if np.any(end < start):
        raise ValueError("every label interval must end at or after it starts (t1 >= t0)")
    return start, end


class PurgedKFold:
    """K contiguous folds in time order; training rows purged around each test fold and embargoed after it.

    ``t0``/``t1``: each row's label interval (ms, or any one integer unit), in the order of the rows of
    the ``X`` that ``split`` will be given (need not be sorted)."""

    def __init__(self, n_splits: int, t0: Any, t1: Any, embargo_ms: int = 0) -> None:
        if n_splits < 2:
            raise ValueError("purged K-fold needs at least 2 folds")
        if embargo_ms < 0:
            raise ValueError("the embargo cannot be negative")
        self.n_splits = n_splits
        self.t0, self.t1 = _intervals(t0, t1)
        self.embargo_ms = int(embargo_ms)
        if len(self.t0) < n_splits:
            raise ValueError(f"{len(self.t0)} rows cannot make {n_splits} folds")

    def get_n_splits(self, X: Any = None, y: Any = None, groups: Any = None) -> int:  # noqa: N803 - sklearn's name
        return self.n_splits

    def split(self, X: Any = None, y: Any = None, groups: Any = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:  # noqa: N803
        """(train, test) row indices per fold, each sorted ascending."""
        n = len(self.t0)
        if X is not None and len(X) != n:
            raise ValueError(f"X has {len(X)} rows and the label intervals {n}")
        order = np.argsort(self.t0, kind="stable")
        for block in np.array_split(order, self.n_splits):
            test = np.sort(block)
            yield self.train_indices(test), test

    def train_indices(self, test: np.ndarray) -> np.ndarray:
        """Every row that is not in ``test``, not purged and not embargoed (see the module docstring)."""
        span_start = int(self.t0[test].min())
        span_end = int(self.t1[test].max())
        keep = np.ones(len(self.t0), dtype=bool)
        keep[test] = False
        overlaps = (self.t0 <= span_end) & (self.t1 >= span_start)
        embargoed = (self.t0 > span_end) & (self.t0 <= span_end + self.embargo_ms)
        keep &= ~overlaps & ~embargoed
        return np.flatnonzero(keep)


class NaiveKFold:
    """Shuffled K-fold without purge or embargo: what scikit-learn's ``KFold(shuffle=True)`` does. Kept for
    the comparison that shows why purging is on (``tapeflow model train`` never validates with it)."""

    def __init__(self, n_splits: int, n_rows: int, seed: int = 0) -> None:
        self.n_splits, self.n_rows, self.seed = n_splits, n_rows, seed

    def get_n_splits(self, X: Any = None, y: Any = None, groups: Any = None) -> int:  # noqa: N803
        return self.n_splits

    def split(self, X: Any = None, y: Any = None, groups: Any = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:  # noqa: N803
        order = np.random.default_rng(self.seed).permutation(self.n_rows)
        for block in np.array_split(order, self.n_splits):
            test = np.sort(block)
            keep = np.ones(self.n_rows, dtype=bool)
            keep[test] = False
            yield np.flatnonzero(keep), test


def walk_forward_splits(
    spec: WalkForwardSpec, t0: Any, t1: Any, from_ms: int, to_ms: int
) -> list[tuple[Window, np.ndarray, np.ndarray]]:
    """``rolling_windows(spec, from_ms, to_ms)`` over the rows: per window, the training rows (``t0`` at or
    after the training start and the label known before the training end: ``t1 < train_end``) and the test
    rows (``t0`` in the test range). A window with no training or no test row is left out."""
    start, end = _intervals(t0, t1)
    windows, _holdout = rolling_windows(spec, from_ms, to_ms)
    out = []
    for w in windows:
        train = np.flatnonzero((start >= w.train_start) & (end < w.train_end))
        test = np.flatnonzero((start >= w.test_start) & (start < w.test_end))
        if len(train) and len(test):
            out.append((w, train, test))
    return out
