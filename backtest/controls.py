"""The non-trade executor inputs of a slice (signals, marks, books) in executor order: by event time;
at equal times a signal, then mark, then book records, then by arrival."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from backtest.inputs import MarketSlice, Record, market_key
from stream_apps.core.events import MarkBatch


class ControlColumns(NamedTuple):
    """The same controls as arrays, for the idle run (``SparseFeed._idle_run``): times, holdable, each
    control's market as a number (an index into ``names``) and its (rank, market) slot as one number."""

    times: np.ndarray
    holdable: np.ndarray
    market: np.ndarray
    slot: np.ndarray
    names: list[str]


class Controls(NamedTuple):
    """The non-trade executor inputs of a slice, ordered by time, rank and arrival, as parallel
    lists (a run has hundreds of thousands: no object each). Rank 0 signal, 1 mark, 2 book; holdable:
    a book, or a mark before its own funding time."""

    times: list[int]
    ranks: list[int]
    holdable: list[bool]
    records: list[Record]
    keys: list[str]
    columns: ControlColumns


def order_controls(due: list[Record], piece: MarketSlice) -> Controls:
    """The due signals and the slice's marks and books in executor order."""
    # (time, rank, seq) as columns, seq the position in signals + marks + books; "held" says
    # whether the record may be held (a book, or a mark before its own funding time)
    names = sorted(
        {market_key(s["exchange"], s["symbol"]) for s in due}
        | {c.key for kind in ("marks", "books") for c in piece.columns(kind)}
    )
    code = {key: n for n, key in enumerate(names)}
    times = [np.array([s["eval_time"] for s in due], dtype=np.int64)]
    seqs = [np.arange(len(due), dtype=np.int64)]
    ranks = [np.zeros(len(due), dtype=np.int64)]
    keys = [np.array([code[market_key(s["exchange"], s["symbol"])] for s in due], dtype=np.int64)]
    held = [np.zeros(len(due), dtype=bool)]
    offset = len(due)
    for rank, kind in ((1, "marks"), (2, "books")):
        for cols in piece.columns(kind):
            times.append(cols.batch.time_ms)
            seqs.append(cols.index + offset)
            ranks.append(np.full(len(cols.index), rank, dtype=np.int64))
            keys.append(np.full(len(cols.index), code[cols.key], dtype=np.int64))
            batch = cols.batch
            held.append(
                batch.time_ms < batch.next_funding_time_ms
                if isinstance(batch, MarkBatch)  # the marks (rank 1)
                else np.ones(len(cols.index), dtype=bool)
            )
        offset += len(getattr(piece, kind))
    time_col, seq_col, rank_col = np.concatenate(times), np.concatenate(seqs), np.concatenate(ranks)
    order = np.lexsort((seq_col, rank_col, time_col))
    records = due + piece.marks + piece.books
    time_col, rank_col, held_col = time_col[order], rank_col[order], np.concatenate(held)[order]
    key_col = np.concatenate(keys)[order]
    arrays = ControlColumns(time_col, held_col, key_col, rank_col * max(len(names), 1) + key_col, names)
    return Controls(
        time_col.tolist(),
        rank_col.tolist(),
        held_col.tolist(),
        [records[i] for i in seq_col[order].tolist()],
        [names[k] for k in key_col.tolist()],
        arrays,
    )
