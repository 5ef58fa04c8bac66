"""A local columnar cache of parsed aggTrades files: Arrow IPC under ``TAPEFLOW_HOME/cache/columns``.

The first read of a Vision aggTrades archive parses its CSV (``read_agg_trade_columns``) and writes the
columns here; later runs and research read the cached file instead of decompressing and parsing again. An entry is keyed by the source file's name, size, modification time and, where the
archive has one, its ``.CHECKSUM`` text: a file that changes (re-downloaded, replaced in a mirror) gets
a new key, and the stale entry of the same name is removed when the new one is written. Only clean
files are cached: a file with bad rows goes through the row reader on every run, so each run's report
names its bad rows.

Why Arrow IPC and not Parquet: the file is read back with no decoding (the columns are the buffers),
which is what makes a warm run cheap; compression would trade disk for CPU on every read.

A day's file is written in time order as 24 record batches, one per UTC hour of the day (``put`` with
``day_start_ms``; trades stamped before the day are in the first, after it in the last), so a backtest
reads one hour of one symbol at a time (``day``): its memory is bounded by an hour per symbol, not by
the day or the range (benchmarks/RESULTS.md, "Vision backtest: peak RSS against the range"). The hour is
read into memory rather than memory-mapped: mapped pages stay resident (and count in the RSS) for as
long as the map lives, which would be the whole day of every symbol; reading 24 batches costs no more
CPU than mapping the day.

``tapeflow cache ls`` lists the entries, ``tapeflow cache clear`` removes them.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from producers.backfill.agg_trades_csv import AggTradeColumns
from producers.backfill.vision_files import CHECKSUM_SUFFIX

SUFFIX = ".arrow"
FORMAT = 2  # 2: sorted, one record batch per hour (1: file order, one batch); part of the key
HOUR_MS = 3_600_000
HOURS = 24
FIELDS = ("agg_id", "price", "qty", "first_trade_id", "last_trade_id", "time_ms", "taker_sell")
ENGINE_FIELDS = ("agg_id", "time_ms", "price", "qty", "taker_sell")  # what a backtest reads back


class CachedDay:
    """A cached day file, read one hour (record batch) at a time: only that hour's columns are in memory.

    Only the columns the engine takes (``ENGINE_FIELDS``) are read, and they are viewed straight from
    the read buffers with ``np.frombuffer``: Arrow's ``to_numpy`` imports pandas on first use (0.17 s
    of a 3.4 s warm run) and would copy the bit-packed ``taker_sell`` twice."""

    def __init__(self, reader, path: Path, day_start_ms: int) -> None:
        self._reader, self.path, self.day_start_ms = reader, path, day_start_ms

    def hour(self, i: int) -> dict[str, np.ndarray]:
        """The engine's columns of hour ``i`` (0..23) of the day, in time order (possibly empty)."""
        batch = self._reader.get_batch(i)
        return {name: _numpy(batch.column(name)) for name in ENGINE_FIELDS}


_DTYPES = {"int64": np.dtype(np.int64), "double": np.dtype(np.float64)}  # the cache's number columns


def _numpy(array) -> np.ndarray:
    """A null-free fixed-width or boolean Arrow array as numpy (a view for numbers, unpacked bits for bool)."""
    import pyarrow as pa

    n, offset = len(array), array.offset
    if array.null_count:
        raise ValueError("cached columns have no nulls")
    data = array.buffers()[1]
    if pa.types.is_boolean(array.type):
        bits = np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, np.uint8)
        return np.unpackbits(bits, count=offset + n, bitorder="little")[offset:].view(bool)
    dtype = _DTYPES[str(array.type)]
    return np.frombuffer(data, dtype=dtype, count=n, offset=offset * dtype.itemsize) if n else np.zeros(0, dtype)


@dataclass(frozen=True)
class CacheEntry:
    path: Path
    source: str  # the source file's name
    rows: int
    size_bytes: int


class ColumnCache:
    """Parsed aggTrades columns per source file, in ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def key(self, source: Path) -> str:
        st = source.stat()
        checksum = source.with_name(source.name + CHECKSUM_SUFFIX)
        stamp = checksum.read_text(errors="replace").strip() if checksum.is_file() else ""
        return hashlib.sha256(f"{FORMAT}\0{source.name}\0{st.st_size}\0{st.st_mtime_ns}\0{stamp}".encode()).hexdigest()[
            :24
        ]

    def _path(self, source: Path) -> Path:
        return self.root / f"{source.name}.{self.key(source)}{SUFFIX}"

    def get(self, source: Path) -> AggTradeColumns | None:
        """All the cached columns of ``source`` (memory-mapped; ``tapeflow cache`` and tests); None when
        not cached (or unreadable)."""
        import pyarrow as pa

        path = self._path(source)
        if not path.is_file():
            return None
        try:
            table = pa.ipc.open_file(pa.memory_map(str(path), "r")).read_all()
            columns = {name: table.column(name).to_numpy() for name in FIELDS}
        except (pa.ArrowException, OSError, KeyError):
            path.unlink(missing_ok=True)  # a torn or foreign file: parse again
            return None
        columns["taker_sell"] = columns["taker_sell"].astype(bool)
        return AggTradeColumns(**columns)

    def day(self, source: Path, day_start_ms: int) -> CachedDay | None:
        """The cached columns of the day file ``source`` (written by ``put`` with the same
        ``day_start_ms``), read an hour at a time; None when not cached (or unreadable)."""
        import pyarrow as pa

        path = self._path(source)
        if not path.is_file():
            return None
        try:
            reader = pa.ipc.open_file(
                pa.OSFile(str(path), "r"),
                options=pa.ipc.IpcReadOptions(included_fields=[FIELDS.index(name) for name in ENGINE_FIELDS]),
            )
            meta = reader.schema.metadata or {}
            if reader.num_record_batches != HOURS or meta.get(b"day_start_ms") != str(day_start_ms).encode():
                return None  # written for another day layout: parse again (``put`` replaces it)
        except (pa.ArrowException, OSError):
            path.unlink(missing_ok=True)
            return None
        return CachedDay(reader, path, day_start_ms)

    def put(self, source: Path, cols: AggTradeColumns, day_start_ms: int | None = None) -> Path:
        """Write ``cols`` for ``source`` (atomically) and drop older entries of the same file name.
        With ``day_start_ms`` (``cols`` then in time order): one record batch per hour of that day."""
        import pyarrow as pa

        self.root.mkdir(parents=True, exist_ok=True)
        path = self._path(source)
        table = pa.table({name: np.asarray(getattr(cols, name)) for name in FIELDS})
        if day_start_ms is not None:
            edges = np.searchsorted(np.asarray(cols.time_ms), day_start_ms + HOUR_MS * np.arange(1, HOURS), "left")
            bounds = [0, *edges.tolist(), len(table)]
            table = table.replace_schema_metadata({"day_start_ms": str(day_start_ms)})
            pieces = [table.slice(lo, hi - lo) for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]
        else:
            pieces = [table]
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".tmp-", suffix=SUFFIX)
        os.close(fd)
        try:
            with pa.OSFile(tmp, "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
                for piece in pieces:  # exactly one batch per piece, empty ones included
                    writer.write_batch(
                        pa.RecordBatch.from_arrays(
                            [piece.column(name).combine_chunks() for name in FIELDS], schema=table.schema
                        )
                    )
            os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)
        for old in self.root.glob(f"{source.name}.*{SUFFIX}"):
            if old != path:
                old.unlink(missing_ok=True)
        return path

    def entries(self) -> list[CacheEntry]:
        import pyarrow as pa

        out = []
        for path in sorted(self.root.glob(f"*{SUFFIX}")) if self.root.is_dir() else []:
            try:
                reader = pa.ipc.open_file(pa.memory_map(str(path), "r"))
                rows = sum(reader.get_batch(i).num_rows for i in range(reader.num_record_batches))
            except (pa.ArrowException, OSError):
                rows = -1
            out.append(CacheEntry(path, path.name.rsplit(".", 2)[0], rows, path.stat().st_size))
        return out

    def clear(self) -> tuple[int, int]:
        """Remove every entry; returns (files, bytes) removed."""
        files = size = 0
        for entry in self.entries():
            size += entry.size_bytes
            entry.path.unlink(missing_ok=True)
            files += 1
        return files, size
