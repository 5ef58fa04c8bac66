"""A fixed-size ring of time buckets holding int64 sums: the storage behind every rolling window.

Why hand-rolled: rolling windows over event time with exact integer sums, bounded memory, vectorised
batch updates and a plain-data form for a Faust table is a small, specific need; pandas rolling
windows keep every row, and streaming libraries bring their own runtime.

The ring holds buckets ``head - n_buckets + 1 .. head`` (``bucket = time_ms // bucket_ms``); bucket
``b`` lives in slot ``b % n_buckets``. When ``head`` moves forward, the slots it passes over are
zeroed, so every slot always holds exactly its bucket: a window sum is the sum of at most two
contiguous slices (values are stored field-major, so each field's slice is contiguous memory).
Nothing is ever subtracted, so there is no drift to correct: expiry is overwriting with zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .kernels import ring_window_sums


class BucketRing:
    """``n_buckets`` consecutive buckets of ``bucket_ms`` each, with one int64 row per field."""

    def __init__(self, bucket_ms: int, n_buckets: int, fields: Sequence[str]) -> None:
        if bucket_ms <= 0 or n_buckets <= 0 or not fields:
            raise ValueError("bucket_ms and n_buckets must be positive and fields non-empty")
        self.bucket_ms = int(bucket_ms)
        self.n_buckets = int(n_buckets)
        self.fields: tuple[str, ...] = tuple(fields)
        self._values = np.zeros((len(self.fields), self.n_buckets), dtype=np.int64)
        self.head: int = -1  # newest bucket number, -1 before the first write

    # -- updates -----------------------------------------------------------------------------
    def _advance(self, new_head: int) -> None:
        if new_head <= self.head:
            return
        n = self.n_buckets
        if self.head < 0 or new_head - self.head >= n:
            self._values[:] = 0
        else:
            start = (self.head + 1) % n
            stop = start + (new_head - self.head)
            if stop <= n:
                self._values[:, start:stop] = 0
            else:
                self._values[:, start:] = 0
                self._values[:, : stop - n] = 0
        self.head = new_head

    def add(self, bucket_ids: np.ndarray, rows: np.ndarray) -> int:
        """Add ``rows[i]`` (one int64 per field) into bucket ``bucket_ids[i]``, in any order.

        Rows for buckets that already left the ring are dropped; their number is returned.
        """
        bucket_ids = np.asarray(bucket_ids, dtype=np.int64)
        rows = np.asarray(rows, dtype=np.int64).reshape(len(bucket_ids), len(self.fields))
        if len(bucket_ids) == 0:
            return 0
        if len(bucket_ids) > 1 and np.any(bucket_ids[1:] < bucket_ids[:-1]):
            order = np.argsort(bucket_ids, kind="stable")
            bucket_ids, rows = bucket_ids[order], rows[order]
        starts = np.concatenate(([0], np.flatnonzero(np.diff(bucket_ids)) + 1))
        counts = np.diff(np.concatenate((starts, [len(bucket_ids)])))
        return self.add_grouped(bucket_ids[starts], np.add.reduceat(rows, starts, axis=0), counts)

    def add_grouped(self, unique_ids: np.ndarray, sums: np.ndarray, counts: np.ndarray | None = None) -> int:
        """Like :meth:`add` for bucket ids that are already unique and increasing, with their sums."""
        if len(unique_ids) == 0:
            return 0
        self._advance(int(unique_ids[-1]))
        keep = unique_ids > self.head - self.n_buckets
        dropped = 0
        if not keep[0]:
            dropped = int(counts[~keep].sum()) if counts is not None else int((~keep).sum())
            unique_ids, sums = unique_ids[keep], sums[keep]
        if len(unique_ids) == 1:
            self._values[:, int(unique_ids[0]) % self.n_buckets] += sums[0]
        else:
            self._values[:, unique_ids % self.n_buckets] += sums.T
        return dropped

    # -- queries -----------------------------------------------------------------------------
    def window_sum(self, lo: int, hi: int, first_field: int = 0, n_fields: int | None = None) -> np.ndarray:
        """Sums over buckets ``lo..hi`` inclusive of fields ``first_field..`` (absent buckets are 0)."""
        rows = self._values[first_field : None if n_fields is None else first_field + n_fields]
        lo = max(lo, self.head - self.n_buckets + 1)
        hi = min(hi, self.head)
        if hi < lo:
            return np.zeros(rows.shape[0], dtype=np.int64)
        a, b = lo % self.n_buckets, hi % self.n_buckets + 1
        if a < b:
            return rows[:, a:b].sum(axis=1)
        return rows[:, a:].sum(axis=1) + rows[:, :b].sum(axis=1)

    def interval_sums(self, bounds: Sequence[int]) -> np.ndarray:
        """Sums of every field over ``[bounds[i], bounds[i+1])`` for strictly increasing bucket
        ``bounds``: shape (fields, len(bounds) - 1). One copy and one ``reduceat`` for any number of
        windows, which is what a snapshot needs (many windows, same recent buckets)."""
        lo, end = bounds[0], bounds[-1]
        if end - lo > self.n_buckets:
            raise ValueError("interval_sums spans more buckets than the ring holds")
        span = np.zeros((len(self.fields), end - lo), dtype=np.int64)
        first, last = max(lo, self.head - self.n_buckets + 1), min(end - 1, self.head)
        if last >= first:
            a, b = first % self.n_buckets, last % self.n_buckets + 1
            if a < b:
                span[:, first - lo : last - lo + 1] = self._values[:, a:b]
            else:
                split = self.n_buckets - a
                span[:, first - lo : first - lo + split] = self._values[:, a:]
                span[:, first - lo + split : last - lo + 1] = self._values[:, :b]
        return np.add.reduceat(span, np.asarray(bounds[:-1]) - lo, axis=1)

    def dense(self, lo: int, hi: int) -> np.ndarray:
        """Rows (one per bucket, one column per field) for buckets ``lo..hi`` in order."""
        out = np.zeros((max(hi - lo + 1, 0), len(self.fields)), dtype=np.int64)
        first, last = max(lo, self.head - self.n_buckets + 1), min(hi, self.head)
        if last >= first:
            buckets = np.arange(first, last + 1)
            out[buckets - lo] = self._values[:, buckets % self.n_buckets].T
        return out

    def window_sums(self, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
        """Sums of every field over buckets ``[starts[i], ends[i])`` for many windows at once: shape
        (len(starts), fields). One copy of the buckets they span and one cumulative sum, then two
        lookups per window (absent buckets are 0, as in ``window_sum``)."""
        starts = np.ascontiguousarray(starts, dtype=np.int64)
        ends = np.ascontiguousarray(ends, dtype=np.int64)
        if len(starts) == 0:
            return np.zeros((0, len(self.fields)), dtype=np.int64)
        # compiled (``kernels.ring_window_sums``, the same sums as ``prefix``): per segment and symbol,
        # the numpy form's copy, transpose and cumulative sum cost ~30 µs
        return ring_window_sums(self._values, self.head, starts, ends)

    def prefix(self, lo: int, hi: int) -> np.ndarray:
        """Cumulative sums over buckets ``lo..hi-1``: row ``k`` holds the sums of buckets ``lo..lo+k-1``
        (row 0 is zero), so the sum over ``[a, b)`` is ``prefix[b - lo] - prefix[a - lo]``."""
        out = np.zeros((max(hi - lo, 0) + 1, len(self.fields)), dtype=np.int64)
        first, last = max(lo, self.head - self.n_buckets + 1), min(hi - 1, self.head)
        if last >= first:
            a, b = first % self.n_buckets, last % self.n_buckets + 1
            rows = out[first - lo + 1 : last - lo + 2]
            if a < b:
                rows[:] = self._values[:, a:b].T
            else:
                split = self.n_buckets - a
                rows[:split] = self._values[:, a:].T
                rows[split:] = self._values[:, :b].T
            np.cumsum(out[first - lo + 1 :], axis=0, out=out[first - lo + 1 :])
        return out

    def live_buckets(self) -> int:
        """Buckets with any non-zero value (a size metric; at most ``n_buckets``)."""
        return int(np.count_nonzero(np.any(self._values != 0, axis=0)))

    @property
    def capacity_cells(self) -> int:
        """Allocated int64 cells; constant for the life of the ring (memory is bounded)."""
        return self._values.size

    # -- plain-data form ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        buckets = []
        if self.head >= 0:
            ids = np.arange(max(self.head - self.n_buckets + 1, 0), self.head + 1)
            values = self._values[:, ids % self.n_buckets].T
            nonzero = np.any(values != 0, axis=1)
            buckets = [[int(i), *(int(v) for v in row)] for i, row in zip(ids[nonzero], values[nonzero])]
        return {
            "bucket_ms": self.bucket_ms,
            "n_buckets": self.n_buckets,
            "fields": list(self.fields),
            "head": int(self.head),
            "buckets": buckets,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BucketRing:
        ring = cls(data["bucket_ms"], data["n_buckets"], data["fields"])
        ring.head = int(data["head"])
        for entry in data["buckets"]:
            ring._values[:, int(entry[0]) % ring.n_buckets] = np.asarray(entry[1:], dtype=np.int64)
        return ring
