"""Many Avro records of one flat schema at once, into columns: what the sink, the engine and the backtest
read instead of decoding record by record (fastavro, ~5 µs a record here; this ~0.7 µs a trade).

How a batch of Kafka values becomes something polars can read: each value is the Confluent frame
(magic byte, 4-byte schema id) followed by the Avro body. Declaring the frame as a leading
`fixed(5)` field of the record makes the plain concatenation of the values one valid Avro
object-container block, so the OCF header (written by fastavro), the record count, the byte size,
the values joined and a sync marker are a file polars reads without any per-record slicing.

What is hand-written, and why it is safe: only the framing above and a size check. A malformed record
could shift its neighbours' boundaries without any decoder error, so after decoding, every record's
Avro size is recomputed from its decoded values (varint sizes of longs, string lengths, 8 bytes a
double, ...) and compared with the length of the Kafka value it came from, and every frame must carry
the schema id this reader was made for. Any mismatch, and any decode error, raises `ColumnarError`;
the caller then decodes those values record by record, which is where dead letters are made. So the
fast path can only accept what the per-record path would have read identically (tests compare the
two), and never silently misaligns a row.

Flat record schemas only: fields of type long, int, double, float, string, boolean, enum (≤ 64
symbols) and [null, T] of those.
"""

from __future__ import annotations

import io
from typing import Any

import fastavro
import numpy as np
import polars as pl

from schemas.avsc import strip_logical_types

_FRAME_FIELD = "__confluent_frame"
_OK = "__frame_ok"  # the check's column: whether every frame is this schema's
_SYNC = b"\x00" * 16


class ColumnarError(Exception):
    """These values cannot take the columnar path (decode error, size mismatch, other schema id)."""


#: a zigzag value needs k + 1 varint bytes when it is at least the k-th of these (7 bits a byte)
_VARINT_STEPS = np.array([1 << bits for bits in range(7, 64, 7)], dtype=np.uint64)


def varint_sizes(values: np.ndarray) -> np.ndarray:
    """Bytes of the Avro (zigzag varint) encoding of each int64."""
    v = values.astype(np.int64, copy=False)
    zz = (v.astype(np.uint64) << np.uint64(1)) ^ (v >> np.int64(63)).astype(np.uint64)
    return np.searchsorted(_VARINT_STEPS, zz, side="right").astype(np.int64) + 1


def field_kind(avro_type: Any) -> tuple[str, bool]:
    """(kind, nullable) for a flat field type; ColumnarError for anything nested."""
    nullable = False
    if isinstance(avro_type, list):
        branches = [t for t in avro_type if t != "null"]
        if len(branches) != 1 or len(avro_type) != 2 or avro_type[0] != "null":
            raise ColumnarError(f"union {avro_type!r} is not [null, T]")
        nullable, avro_type = True, branches[0]
    if isinstance(avro_type, dict):
        kind = avro_type["type"]
        if kind == "enum":
            if len(avro_type["symbols"]) > 64:
                raise ColumnarError("enum with more than 64 symbols")
            return "enum", nullable
        if kind in ("long", "int", "double", "float", "string", "boolean"):
            return kind, nullable
        raise ColumnarError(f"nested type {kind!r}")
    if avro_type in ("long", "int", "double", "float", "string", "boolean"):
        return avro_type, nullable
    raise ColumnarError(f"type {avro_type!r}")


class AvroColumns:
    """Reads values written with one schema (`writer_schema`, registered as `schema_id`) as columns."""

    def __init__(self, writer_schema: dict[str, Any], schema_id: int) -> None:
        schema = strip_logical_types(writer_schema)
        self.schema = schema
        self.schema_id = schema_id
        self.frame = b"\x00" + schema_id.to_bytes(4, "big")
        self.fields: list[tuple[str, str, bool]] = []
        for f in schema["fields"]:
            kind, nullable = field_kind(f["type"])
            self.fields.append((f["name"], kind, nullable))
        # the size check (module docstring): what numpy cannot read off the columns directly comes
        # from one polars query (a query costs about a millisecond, whatever its size)
        self._check_exprs = [(pl.col(_FRAME_FIELD) == pl.lit(self.frame, pl.Binary)).all().alias(_OK)]
        for name, kind, nullable in self.fields:
            if kind == "string":
                self._check_exprs.append(pl.col(name).str.len_bytes().fill_null(0).cast(pl.Int64).alias("n:" + name))
            if nullable:
                self._check_exprs.append(pl.col(name).is_null().alias("null:" + name))
        framed = dict(schema)
        framed["fields"] = [
            {"name": _FRAME_FIELD, "type": {"type": "fixed", "name": "ConfluentFrame", "size": 5}},
            *schema["fields"],
        ]
        buf = io.BytesIO()
        fastavro.writer(buf, fastavro.parse_schema(framed), [], codec="null", sync_marker=_SYNC)
        self._ocf_header = buf.getvalue()

    @classmethod
    def of_topic(cls, serde: Any, catalogue_topic: str) -> AvroColumns | None:
        """The reader of `catalogue_topic`'s current schema (what `serde` writes), or None if not flat."""
        schema_id = serde.schema_id(catalogue_topic)
        try:
            return cls(serde.registry.schema_for(schema_id), schema_id)
        except ColumnarError:
            return None

    def _read(self, joined: bytes, count: int) -> pl.DataFrame:
        """`count` values joined in `joined`, read as one Avro block (the record fields and the frame);
        ColumnarError if unreadable."""
        if not count:
            raise ColumnarError("no records")
        block = b"".join([self._ocf_header, avro_long(count), avro_long(len(joined)), joined, _SYNC])
        try:
            df = pl.read_avro(io.BytesIO(block))
        except BaseException as exc:  # polars raises ComputeError, OSError, and pyo3 panics (BaseException)
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise
            raise ColumnarError(f"decode failed: {type(exc).__name__}: {str(exc)[:200]}") from None
        if df.height != count:
            raise ColumnarError(f"{df.height} records decoded from {count} values")
        return df

    def _check(self, lengths: np.ndarray, df: pl.DataFrame) -> None:
        """Every frame is this schema's and every record's Avro size is its Kafka value's length."""
        checked = df.select(self._check_exprs)
        if not checked.get_column(_OK)[0]:
            raise ColumnarError("a record carries another schema id (or no Confluent frame)")
        size = np.full(df.height, 5, dtype=np.int64)  # the frame
        for name, kind, nullable in self.fields:
            if kind in ("long", "int"):
                col = df.get_column(name)
                s = varint_sizes((col.fill_null(0) if col.null_count() else col).to_numpy())
            elif kind == "string":
                n = checked.get_column("n:" + name).to_numpy()
                s = varint_sizes(n) + n
            else:  # fixed sizes; an enum is its symbol's index, one varint byte (≤ 64 symbols, checked at init)
                s = {"double": 8, "float": 4, "boolean": 1, "enum": 1}[kind]
            if nullable:  # the union branch's index (one byte), and nothing more for a null
                s = np.where(checked.get_column("null:" + name).to_numpy(), 1, s + 1)
            size += s
        if not np.array_equal(size, lengths):
            raise ColumnarError("record boundaries do not match the Kafka values (malformed record)")

    def decode_frame(self, values: list[bytes]) -> pl.DataFrame:
        """The records of `values` as columns; ColumnarError when anything is not exactly right (a record
        without a value too: the record path dead-letters it)."""
        if None in values:
            raise ColumnarError("a record has no value")
        return self.decode_joined(b"".join(values), np.fromiter(map(len, values), dtype=np.int64, count=len(values)))

    def decode_joined(self, joined: bytes, lengths: np.ndarray) -> pl.DataFrame:
        """`decode_frame` of values already joined, with their lengths (-1: a null value, never accepted)."""
        if len(lengths) and int(lengths.min()) < 0:
            raise ColumnarError("a record has no value")
        df = self._read(joined, len(lengths))
        self._check(lengths, df)
        return df


def avro_long(n: int) -> bytes:
    """Avro long (zigzag varint): an OCF block's record count and byte size."""
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)
