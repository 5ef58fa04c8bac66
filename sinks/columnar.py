"""Many Avro records at once, straight into one binary COPY payload: the sink's fast path.

Why: decoding record by record (fastavro, ~5 µs a record here), building a tuple and letting psycopg
format it for COPY capped the sink near 70k rows/s, a quarter of the 300k target. The sink's path
(`encode`, `encode_joined`) walks a whole batch's values in one compiled pass (`sinks._avro_copy`,
numba) and writes PostgreSQL's binary COPY rows directly, ~0.15 µs a trade; Python touches each
message once to get its bytes, or not at all when the raw fetcher gathered them
(`tapeflow_runtime.record_batches`). The Arrow route below (polars' Avro reader into columns, pgpq
from Arrow to COPY, ~0.65-0.8 µs a trade) writes the same bytes; it is kept as `encode_arrow`, the
reference the compiled walk is tested against, and `decode_frame` gives the backtest its columns.

Decoding (the Confluent frame as a leading fixed field, one Avro block for polars, the size check that
refuses anything the per-record path would not read identically) is `schemas.avro_columns`, shared
with the engine and the backtest; the codec adds the table's columns and the COPY encoding.

Used for flat record schemas whose table columns are the record fields one to one (`COLUMNAR`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pgpq
import polars as pl

from schemas.avro_columns import AvroColumns, ColumnarError, varint_sizes
from sinks.tables import TableSpec

__all__ = ["COLUMNAR", "ColumnarCodec", "ColumnarError", "ColumnarPart", "copy_payload", "varint_sizes"]

#: tables whose rows are their record's fields one to one (same names, no derived values)
COLUMNAR = frozenset({"trades", "liquidations", "mark_prices", "bars_1m"})

DAY_MS = 86_400_000
COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00" * 8  # signature, flags, no header extension
COPY_TRAILER = b"\xff\xff"


@dataclass(frozen=True)
class ColumnarPart:
    """One fetch of one topic, decoded and encoded: COPY row data (no header/trailer) and its times."""

    table: str
    rows: int
    data: bytes
    min_ms: int
    max_ms: int
    days: frozenset[int]  # UTC days (Unix ms // DAY_MS) of the time column


_COPY_TYPE_FOR = {
    "long": "int8",
    "int": "int4",
    "double": "float8",
    "float": "float4",
    "string": "text",
    "enum": "text",
    "boolean": "bool",
}


class ColumnarCodec(AvroColumns):
    """Fast path for one topic's current schema into one table (see the module docstring)."""

    def __init__(self, spec: TableSpec, writer_schema: dict[str, Any], schema_id: int) -> None:
        if spec.table not in COLUMNAR:
            raise ColumnarError(f"{spec.table} is not a columnar table")
        super().__init__(writer_schema, schema_id)
        self.spec = spec
        by_name = {name: (kind, nullable) for name, kind, nullable in self.fields}
        exprs = []
        for column, copy_type in zip(spec.columns, spec.copy_types):
            if column not in by_name:
                raise ColumnarError(f"{spec.table}.{column} is not a field of the record")
            kind = by_name[column][0]
            if copy_type == "timestamptz" and kind == "long":
                exprs.append(pl.col(column).cast(pl.Datetime("ms", "UTC")).cast(pl.Datetime("us", "UTC")))
            elif _COPY_TYPE_FOR[kind] == copy_type:
                exprs.append(pl.col(column).cast(pl.String) if kind == "enum" else pl.col(column))
            else:
                raise ColumnarError(f"{spec.table}.{column}: {kind} does not map to {copy_type}")
        self._exprs = exprs
        self._walk_tables(self.schema)

    def _walk_tables(self, schema: dict[str, Any]) -> None:
        """What `sinks._avro_copy.encode` needs: each field's kind (a long stored as timestamptz is Unix
        ms), which are [null, T], each column's field, the enums' symbols, the time field."""
        from sinks import _avro_copy as k

        kinds = {
            "long": k.K_LONG,
            "int": k.K_INT,
            "double": k.K_DOUBLE,
            "float": k.K_FLOAT,
            "boolean": k.K_BOOL,
            "string": k.K_STRING,
            "enum": k.K_ENUM,
        }
        copy_type = dict(zip(self.spec.columns, self.spec.copy_types, strict=True))
        names = [name for name, _, _ in self.fields]
        field_kinds, symbols, first, count = [], [], [], []
        for f, (name, kind, _) in zip(schema["fields"], self.fields, strict=True):
            field_kinds.append(k.K_TS if kind == "long" and copy_type.get(name) == "timestamptz" else kinds[kind])
            t = f["type"]
            t = next(b for b in t if b != "null") if isinstance(t, list) else t
            first.append(len(symbols))
            enum = t["symbols"] if isinstance(t, dict) and t["type"] == "enum" else []
            symbols += [sym.encode() for sym in enum]
            count.append(len(enum))
        offsets = np.cumsum([0] + [len(sym) for sym in symbols], dtype=np.int64)
        self._kinds = np.array(field_kinds, dtype=np.int64)
        self._nullable = np.array([nullable for _, _, nullable in self.fields], dtype=np.bool_)
        self._column_field = np.array([names.index(c) for c in self.spec.columns], dtype=np.int64)
        self._enum_bytes = np.frombuffer(b"".join(symbols), dtype=np.uint8).copy()
        self._enum_off, self._enum_first = offsets, np.array(first, dtype=np.int64)
        self._enum_count = np.array(count, dtype=np.int64)
        self._time_field = names.index(self.spec.time_column)
        self._frame_bytes = np.frombuffer(self.frame, dtype=np.uint8).copy()
        # a row's most bytes beyond its Avro bytes: its field count, and each column's length word and value
        self._row_extra = 2 + len(self.spec.columns) * (4 + max([8, *(len(sym) for sym in symbols)]))

    @classmethod
    def for_topic(cls, spec: TableSpec, serde, catalogue_topic: str) -> ColumnarCodec | None:
        """The codec for records of `catalogue_topic` written with its current schema, or None."""
        if spec.table not in COLUMNAR:
            return None
        schema_id = serde.schema_id(catalogue_topic)
        try:
            return cls(spec, serde.registry.schema_for(schema_id), schema_id)
        except ColumnarError:
            return None

    # --- encode ----------------------------------------------------------------------------------------
    def encode(self, values: list[bytes]) -> ColumnarPart:
        """Decode `values` and encode them as binary COPY row data for the table.

        Two polars queries a call (the checks', the table's columns): each has a fixed cost of about a
        millisecond, so the sink calls this once per batch of up to `SinkConfig.batch_rows` records."""
        if None in values:
            raise ColumnarError("a record has no value")
        return self.encode_joined(b"".join(values), np.fromiter(map(len, values), dtype=np.int64, count=len(values)))

    def encode_joined(self, joined: bytes, lengths: np.ndarray) -> ColumnarPart:
        """`encode` of values already joined, with their lengths (what `tapeflow_runtime.record_batches`
        fetches: no Python object per record). One compiled pass (`sinks._avro_copy`), the same bytes as
        the Arrow route (`encode_arrow`), ~5x less CPU."""
        from sinks._avro_copy import NO_TIME, encode

        n = len(lengths)
        if not n:
            raise ColumnarError("no records")
        if int(lengths.min()) < 0:
            raise ColumnarError("a record has no value")
        buf = np.frombuffer(joined, dtype=np.uint8)
        out = np.empty(len(buf) + n * self._row_extra, dtype=np.uint8)
        times = np.empty(n, dtype=np.int64)
        written, bad = encode(
            buf,
            lengths.astype(np.int64, copy=False),
            self._frame_bytes,
            self._kinds,
            self._nullable,
            self._column_field,
            self._enum_bytes,
            self._enum_off,
            self._enum_first,
            self._enum_count,
            self._time_field,
            out,
            times,
        )
        if bad >= 0:
            raise ColumnarError(f"record {bad} of {n} is not exactly this schema's (frame, a length, a value)")
        if int(lengths.sum()) != len(buf):
            raise ColumnarError("the values' lengths do not add up to the bytes given")
        times = times[times != NO_TIME]
        if not len(times):
            raise ColumnarError("no row has a time")
        lo, hi = int(times.min()), int(times.max())
        days = {lo // DAY_MS} if lo // DAY_MS == hi // DAY_MS else set(np.unique(times // DAY_MS).tolist())
        return ColumnarPart(self.spec.table, n, out[:written].tobytes(), lo, hi, frozenset(days))

    def encode_arrow(self, values: list[bytes]) -> ColumnarPart:
        """`encode` through polars' Avro reader and pgpq (Arrow -> COPY): the reference `encode_joined` is
        tested against."""
        return self._encode_frame(self.decode_frame(values))

    def _encode_frame(self, df: pl.DataFrame) -> ColumnarPart:
        table = df.select(self._exprs).to_arrow()
        encoder = pgpq.ArrowToPostgresBinaryEncoder(table.schema)
        if encoder.write_header() != COPY_HEADER:
            raise ColumnarError("unexpected COPY header from the encoder")
        pieces = [encoder.write_batch(b) for b in table.to_batches()]
        pieces.append(encoder.finish())
        data = b"".join(pieces)
        if not data.endswith(COPY_TRAILER):
            raise ColumnarError("unexpected COPY trailer from the encoder")
        times = df.get_column(self.spec.time_column)
        if times.null_count():
            times = times.drop_nulls()
        if times.is_empty():
            raise ColumnarError("no row has a time")
        ms = times.to_numpy()
        lo, hi = int(ms.min()), int(ms.max())
        days = {lo // DAY_MS} if lo // DAY_MS == hi // DAY_MS else set(np.unique(ms // DAY_MS).tolist())
        return ColumnarPart(self.spec.table, df.height, data[: -len(COPY_TRAILER)], lo, hi, frozenset(days))


def copy_payload(parts: list[bytes]) -> bytes:
    """One complete binary COPY stream from the row data of several parts."""
    return COPY_HEADER + b"".join(parts) + COPY_TRAILER
