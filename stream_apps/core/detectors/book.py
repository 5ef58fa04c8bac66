"""Order-book walls and iceberg refills of one symbol, from ``md.book`` snapshots and trades.

Inputs: the book snapshots' levels (top-N per side, e.g. 20 every 250 ms; ``BookUpdate.levels``)
and the accepted trades, merged in time order: a trade at or before a snapshot's time happened
before it. Each snapshot is compared with the previous one and with the trades between them.

Per snapshot: ``mid`` = (best bid + best ask) / 2 (one side empty: its best price; both empty, or
no levels at all, as from Binance Vision: the snapshot is skipped). A level's distance is
``(mid − price) / mid`` (bids) or ``(price − mid) / mid`` (asks) in bps; the levels considered are
those within the band (at most ``MAX_LEVELS`` a side, nearest first). Sizes are USD (price × qty).

- **Walls** (``walls`` section): a level within ``wall_band_bps`` whose USD size is at least
  ``wall_multiple`` × the median USD size of all levels (both sides) within the band.

  * ``wall_bid_distance_bps`` / ``wall_bid_usd`` / ``wall_bid_age_s`` (and ``ask``): the nearest
    wall of the side in the latest snapshot before ``t``, its size, and how long a wall has stood at
    its price without a break (``t`` − the time of the first snapshot of the run in which it was a
    wall, in seconds). Missing when the side has no wall, or when the latest snapshot is older than
    ``wall_max_age_ms``.
  * ``wall_pulled_*`` / ``wall_filled_*``: walls that ended within ``[t − wall_window_ms, t)``.
    A wall of the previous snapshot ends when the next one has no wall at its price; with ``q0`` its
    previous quantity and ``q1`` the quantity now at the price (0 when gone), it ended **filled**
    when the trades since the previous snapshot that reached its price — taker sells at or below a
    bid wall, taker buys at or above an ask wall — add up to at least ``wall_fill_ratio`` × (q0 −
    q1); otherwise **pulled**, if the price is still in view (within the band of the new mid on its
    side, not beyond the deepest level the snapshot lists; a price the book crossed is in view).
    Neither when the quantity did not fall (it stopped being a wall because the median rose) or the
    price left the view (the market moved away; nobody can say what happened to it).

- **Icebergs** (``icebergs`` section): a **refill** at a level within ``iceberg_band_bps`` of the
  previous snapshot is: trades at exactly its price from the side that takes it (taker sells at a
  bid, taker buys at an ask) of at least ``iceberg_trade_fraction`` × its previous quantity, and in
  the new snapshot the same price on the same side shows at least ``iceberg_refill_fraction`` × the
  previous quantity again. A price becomes an iceberg at its ``iceberg_min_refills``-th refill less
  than ``iceberg_window_ms`` after its first counted one (refills ``r`` with ``t − t_r <
  window``); from then on each of its refills (those that made it one included, each once) is an
  **iceberg refill**, counted at the snapshot that recognised it: ``iceberg_refills_*`` and
  ``iceberg_usd_*`` (the traded USD of those refills) over ``[t − iceberg_window_ms, t)``.
  The last ``ICEBERG_PRICES`` prices with refills are tracked per side (the one refilled longest
  ago makes room).

**Sampling** (``sample_ms``, the strategy's ``detectors.book_sample``, 1 s by default): only the first
snapshot that carries levels in each interval ``[k x sample_ms, (k + 1) x sample_ms)`` is compared
(an older interval's is dropped, like a snapshot older than the one in use); the trades between the
compared snapshots still all count. md.book comes every 250 ms; comparing each one costs ~2-3 µs
in the engine against ~0.5 µs for a trade, so at live trade rates the book parts would cost more
than the rest of the engine (``benchmarks/RESULTS.md``, "Book detectors"); at 1 s, the cadence of
our users' whale system, they cost a quarter of that. A wall pulled and put back within the
interval is not seen: ``book_sample: 0`` compares every snapshot.

Counts read as missing before the first snapshot with levels. Quantities are integers of 1e-8 and
USD of 1e-6 (exact sums), so the values do not depend on how the inputs are batched; memory is
fixed by the parameters; the state is plain data.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from operator import attrgetter, itemgetter
from typing import Any

import numpy as np

from ..events import BookLevels, attached_levels, object_column
from ..params import SECOND_MS
from ..ring import BucketRing
from . import book_kernels as bk
from .microstructure import DetectorLog
from .params import BOOK_FIELDS, ICEBERG_FIELDS, WALL_FIELDS, BookParams  # noqa: F401 (re-exported)

__all__ = ["BOOK_FIELDS", "ICEBERG_FIELDS", "WALL_FIELDS", "BookDetectors", "BookParams", "flatten_levels"]

MAX_LEVELS = 64  # levels per side considered (md.book carries 20)
ICEBERG_PRICES = 64  # prices with refills tracked per side
_RING_FIELDS = (
    "pulled_bid",
    "pulled_ask",
    "filled_bid",
    "filled_ask",
    "ice_bid",
    "ice_ask",
    "ice_usd_bid",
    "ice_usd_ask",
)
BID, ASK = 0, 1
_PRICE, _QTY, _FIRST, _SECOND = itemgetter("price"), itemgetter("qty"), itemgetter(0), itemgetter(1)
_N_BIDS = attrgetter("n_bids")
_COLUMN_TYPES = {BookLevels, type(None)}
_FEW = 16  # snapshots up to which ``_flatten_columns`` loops in Python


def flatten_levels(levels: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Snapshots' levels (each ``BookUpdate.levels``: ``BookLevels``, a record, a (bids, asks) pair,
    or None) as the kernel takes them: prices and quantities of every level flattened, and per
    snapshot and side where its prices start, where its quantities start and how many (-1: no
    levels). At most ``MAX_LEVELS`` a side, best first as the record lists them. ``BookLevels``
    (a restored engine's pending snapshots, or a source that gives columns) cost one array
    concatenation for the lot (prices and quantities are
    then the same array); records and pairs are read here, all in one list (as ``book_levels``
    reads them: equal values)."""
    columns = [attached_levels(item) for item in levels]
    n = len(columns)
    if set(map(type, columns)) <= _COLUMN_TYPES:
        return _flatten_columns(columns, n)
    prices: list[float] = []
    qtys: list[float] = []
    starts: list[int] = []
    counts: list[int] = []
    for item in columns:
        if item is None:
            starts += (0, 0)
            counts += (-1, -1)
            continue
        if type(item) is BookLevels:
            starts += (len(prices), len(prices) + item.n_bids)
            counts += (min(item.n_bids, MAX_LEVELS), min(len(item.prices) - item.n_bids, MAX_LEVELS))
            prices += item.prices.tolist()
            qtys += item.qtys.tolist()
            continue
        if isinstance(item, dict):  # an md.book record (a ``BookRecord`` without columns too)
            sides = (item.get("bids") or (), item.get("asks") or ())
        else:
            sides = (item[0], item[1])
        for rows in sides:
            if len(rows) > MAX_LEVELS:
                rows = rows[:MAX_LEVELS]
            starts.append(len(prices))
            counts.append(len(rows))
            if rows and type(rows[0]) is dict:  # the Avro record's levels
                prices.extend(map(_PRICE, rows))
                qtys.extend(map(_QTY, rows))
            else:
                prices.extend(map(_FIRST, rows))
                qtys.extend(map(_SECOND, rows))
    start = np.array(starts, dtype=np.int64).reshape(-1, 2)
    return (
        np.array(prices, dtype=np.float64),
        np.array(qtys, dtype=np.float64),
        start,
        start,
        np.array(counts, dtype=np.int64).reshape(-1, 2),
    )


def _flatten_columns(columns: list, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``flatten_levels`` of ``BookLevels`` and None only: no Python work per level (a few snapshots,
    as the live worker's segments bring: plain Python per snapshot, cheaper than the dozen numpy
    calls of the many-snapshot form)."""
    if n <= _FEW:
        starts: list[int] = []
        qstarts: list[int] = []
        counts: list[int] = []
        data = []
        offset = 0
        for c in columns:
            if c is None:
                starts += (0, 0)
                qstarts += (0, 0)
                counts += (-1, -1)
                continue
            size = len(c.data)
            levels, n_bids = size // 2, c.n_bids
            starts += (offset, offset + n_bids)
            qstarts += (offset + levels, offset + levels + n_bids)
            counts += (min(n_bids, MAX_LEVELS), min(levels - n_bids, MAX_LEVELS))
            data.append(c.data)
            offset += size
        flat = data[0] if len(data) == 1 else np.concatenate(data) if data else np.empty(0)
        return (
            flat,
            flat,
            np.array(starts, dtype=np.int64).reshape(-1, 2),
            np.array(qstarts, dtype=np.int64).reshape(-1, 2),
            np.array(counts, dtype=np.int64).reshape(-1, 2),
        )
    present = [c for c in columns if c is not None] if None in columns else columns
    starts = np.zeros((n, 2), dtype=np.int64)
    qstarts = np.zeros((n, 2), dtype=np.int64)
    counts = np.full((n, 2), -1, dtype=np.int64)
    if not present:
        return np.empty(0), np.empty(0), starts, qstarts, counts
    k = len(present)
    data = [c.data for c in present]
    sizes = np.fromiter(map(len, data), np.int64, k)
    levels = sizes // 2
    n_bids = np.fromiter(map(_N_BIDS, present), np.int64, k)
    offsets = np.zeros(k, dtype=np.int64)
    np.cumsum(sizes[:-1], out=offsets[1:])
    rows = np.flatnonzero([c is not None for c in columns]) if k < n else slice(None)
    starts[rows, 0] = offsets
    starts[rows, 1] = offsets + n_bids
    qstarts[rows, 0] = offsets + levels
    qstarts[rows, 1] = offsets + levels + n_bids
    counts[rows, 0] = np.minimum(n_bids, MAX_LEVELS)
    counts[rows, 1] = np.minimum(levels - n_bids, MAX_LEVELS)
    flat = data[0] if k == 1 else np.concatenate(data)
    return flat, flat, starts, qstarts, counts


class BookDetectors:
    """Walls and icebergs of one symbol: ``update`` with snapshots and trades, read ``values_many``."""

    def __init__(self, params: BookParams) -> None:
        self.params = params
        p = params
        nan = math.nan
        self._fparams = np.array(
            [
                p.wall_multiple or nan,
                p.wall_band_bps,
                p.wall_fill_ratio,
                p.iceberg_band_bps,
                p.iceberg_trade_fraction,
                p.iceberg_refill_fraction,
                p.band_bps,
            ]
        )
        self._iparams = np.array(
            [p.walls_on, p.icebergs_on, p.iceberg_min_refills or 2, p.iceberg_window_ms], dtype=np.int64
        )
        self.ints = np.full(bk.N_INTS, -1, dtype=np.int64)
        self.floats = np.full(bk.N_FLOATS, nan)
        self.prices = np.full((2, MAX_LEVELS), nan)
        self.units = np.zeros((2, MAX_LEVELS), dtype=np.int64)
        self.counts = np.zeros(2, dtype=np.int64)
        self.first_seen = np.full((2, MAX_LEVELS), -1, dtype=np.int64)
        self.traded_at = np.zeros((2, MAX_LEVELS), dtype=np.int64)
        self.traded_deepest = np.zeros((2, MAX_LEVELS), dtype=np.int64)
        slots = max((p.iceberg_min_refills or 2) - 1, 1)
        self.ice_prices = np.full((2, ICEBERG_PRICES), nan)
        self.ice_last = np.full((2, ICEBERG_PRICES), -1, dtype=np.int64)
        self.ice_times = np.full((2, ICEBERG_PRICES, slots), -1, dtype=np.int64)
        self.ice_usd = np.zeros((2, ICEBERG_PRICES, slots), dtype=np.int64)
        self.ice_counted = np.zeros((2, ICEBERG_PRICES, slots), dtype=np.bool_)
        self.ring = BucketRing(SECOND_MS, p.ring_seconds, _RING_FIELDS)
        self._current = np.full(7, nan)
        self._sampled = -1  # the latest sampling interval a snapshot was taken from (-1: none)
        self._iparams_read = np.array(
            [
                p.walls_on,
                p.icebergs_on,
                p.wall_window_ms // SECOND_MS,
                p.iceberg_window_ms // SECOND_MS,
                p.wall_max_age_ms,
            ],
            dtype=np.int64,
        )

    @property
    def current(self) -> tuple[float, ...]:
        """(bid wall distance, USD, first seen, ask ..., snapshot time) now; NaN: none."""
        return tuple(float(v) for v in self._current)

    @property
    def book_time(self) -> int:
        return int(self.ints[bk.I_BOOK_TIME])

    # -- updates ----------------------------------------------------------------------------------
    def update(
        self,
        book_times: np.ndarray,
        book_levels: Any,
        times: np.ndarray,
        prices: np.ndarray,
        units: np.ndarray,
        sells: np.ndarray,
    ) -> DetectorLog:
        """Apply snapshots (time order; ``book_levels[i]``: ``BookUpdate.levels``) and accepted trades
        (time order; ``units``: base quantity in 1e-8) merged by time, a trade at a snapshot's time
        before it. Returns the log of the nearest walls: (bid distance, USD, first seen, ask ...,
        snapshot time) from each snapshot's time on."""
        book_times = np.ascontiguousarray(book_times, dtype=np.int64)
        n = len(book_times)
        if n == 0:  # trades alone: counted against the latest snapshot (none yet: nothing to count)
            if self.book_time >= 0 and len(times):
                bk.add_trades(
                    np.ascontiguousarray(prices, dtype=np.float64),
                    np.ascontiguousarray(units, dtype=np.int64),
                    np.ascontiguousarray(sells, dtype=np.bool_),
                    self.prices,
                    self.counts,
                    self.traded_at,
                    self.traded_deepest,
                )
            return DetectorLog()
        if self.params.sample_ms:
            book_times, book_levels = self._sample(book_times, book_levels)
            n = len(book_times)
            if n == 0:
                return self.update(book_times, (), times, prices, units, sells)
        lv_prices, lv_qtys, lv_start, lv_qstart, lv_count = flatten_levels(book_levels)
        lv_prices = np.ascontiguousarray(lv_prices, dtype=np.float64)
        lv_qtys = np.ascontiguousarray(lv_qtys, dtype=np.float64)
        keys = np.empty(n, dtype=np.int64)
        values = np.empty((n, 7))
        buckets = np.empty(n, dtype=np.int64)
        rows = np.empty((n, len(_RING_FIELDS)), dtype=np.int64)
        written, grouped = bk.book_update(
            book_times,
            lv_prices,
            lv_qtys,
            lv_start,
            lv_qstart,
            lv_count,
            np.ascontiguousarray(times, dtype=np.int64),
            np.ascontiguousarray(prices, dtype=np.float64),
            np.ascontiguousarray(units, dtype=np.int64),
            np.ascontiguousarray(sells, dtype=np.bool_),
            self._fparams,
            self._iparams,
            self.ints,
            self.floats,
            self.prices,
            self.units,
            self.counts,
            self.first_seen,
            self.traded_at,
            self.traded_deepest,
            self.ice_prices,
            self.ice_last,
            self.ice_times,
            self.ice_usd,
            self.ice_counted,
            self._current,
            keys,
            values,
            buckets,
            rows,
        )
        if not written:
            return DetectorLog()
        if grouped:  # per second, increasing (as ``BucketRing.add`` would group them)
            self.ring.add_grouped(buckets[:grouped], rows[:grouped])
        return DetectorLog(keys[:written].copy(), values[:written].copy())

    def _sample(self, book_times: np.ndarray, book_levels: Any) -> tuple[np.ndarray, np.ndarray]:
        """The snapshots sampling keeps: per interval after the latest one taken, the first with
        levels (``book_times`` in time order). Before the levels are read: the rest cost nothing."""
        levels = book_levels if isinstance(book_levels, np.ndarray) else object_column(book_levels)
        interval = book_times // self.params.sample_ms
        has = np.array([item is not None for item in levels.tolist()], dtype=bool)
        candidates = np.flatnonzero(has & (interval > self._sampled))
        if not len(candidates):
            return book_times[:0], levels[:0]
        first = np.ones(len(candidates), dtype=bool)
        first[1:] = interval[candidates[1:]] != interval[candidates[:-1]]
        keep = candidates[first]
        self._sampled = int(interval[keep[-1]])
        return book_times[keep], levels[keep]

    # -- reads ------------------------------------------------------------------------------------
    def values_many(self, times: np.ndarray, walls: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Every book field at ``times`` (NaN where off or missing); ``walls``: what each time saw
        (rows x 7, from the segment's log), the current values otherwise. One compiled call
        (``book_kernels.book_values``): this runs per segment and symbol."""
        times = np.ascontiguousarray(times, dtype=np.int64)
        n = len(times)
        if walls is None:
            walls = np.empty((n, 7))
            walls[:] = self.current
        out = np.empty((len(BOOK_FIELDS), n))
        bk.book_values(
            times,
            np.ascontiguousarray(walls, dtype=np.float64),
            self.ring._values,
            self.ring.head,
            self._iparams_read,
            out,
        )
        return dict(zip(BOOK_FIELDS, out))

    @property
    def capacity_cells(self) -> int:
        return (
            sum(getattr(self, name).size for name in self._ARRAYS)
            + self._fparams.size
            + self._iparams.size
            + self.ring.capacity_cells
        )

    # -- plain-data form --------------------------------------------------------------------------
    _ARRAYS = (
        "ints",
        "floats",
        "prices",
        "units",
        "counts",
        "first_seen",
        "traded_at",
        "traded_deepest",
        "ice_prices",
        "ice_last",
        "ice_times",
        "ice_usd",
        "ice_counted",
        "_current",
    )

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"params": asdict(self.params), "ring": self.ring.to_dict(), "sampled": self._sampled}
        for name in self._ARRAYS:
            array = getattr(self, name)
            values = array.tolist()
            if array.dtype == np.float64:  # NaN is not JSON
                values = np.where(np.isnan(array), None, array.astype(object)).tolist()
            data[name.lstrip("_")] = values
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BookDetectors:
        out = cls(BookParams(**data["params"]))
        for name in cls._ARRAYS:
            array = getattr(out, name)
            values = np.asarray(data[name.lstrip("_")], dtype=object)
            if array.dtype == np.float64:
                values = np.where(values == None, np.nan, values)  # noqa: E711 - element-wise
            array[...] = values.astype(array.dtype).reshape(array.shape)
        out.ring = BucketRing.from_dict(data["ring"])
        out._sampled = int(data.get("sampled", -1))  # a state from before sampling: none taken
        return out
