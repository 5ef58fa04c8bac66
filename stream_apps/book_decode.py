"""``md.book`` records straight from their Avro bytes to the engine's input: a ``BookUpdate`` whose
levels are ``BookLevels`` columns.

Why hand-written: fastavro decodes a 20-level snapshot into 40 ``{"price", "qty"}`` dicts, and the
book detectors then read those 40 dicts back into an array (4-8 µs a snapshot, more than comparing
it; ``benchmarks/RESULTS.md``, "Book detectors"). In the Avro encoding the levels already are that
array: an array of records of two doubles is a count followed by 16 little-endian bytes per level,
so ``np.frombuffer`` reads them without a Python object per level. Only the writer schema this
module knows (``LAYOUT``: the fields of ``schemas/avro/book_snapshot.avsc`` in order, docs aside) is
read here; a record written with any other schema goes through ``AvroSerde.decode`` and
``book_from_record`` as before. Either way the values are the same (tests compare both on generated
and fuzzed records); a body this reader cannot read raises, like the serde (the worker makes it a dead
letter). Users: the live engine worker (``faust_app.inputs``, ``BookUpdate``s) and the backtest's
topics source (``BookRecord``s: the record every consumer reads, with its columns).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import numpy as np

from schemas.errors import WireFormatError
from schemas.serde import HEADER_SIZE, AvroSerde, peek_schema_id
from stream_apps.core.events import BookLevels, BookRecord, BookUpdate, book_from_record

__all__ = ["LAYOUT", "BookDecoder", "decode_book", "decode_book_record"]

_LEVELS = ("array", (("price", "double"), ("qty", "double")))
LAYOUT = (
    ("exchange", "string"),
    ("symbol", "string"),
    ("last_update_id", "long"),
    ("event_time", "long"),
    ("receive_time", "long"),
    ("bids", _LEVELS),
    ("asks", _LEVELS),
    ("obi_10", "double"),
)
_DOUBLE = struct.Struct("<d")


def layout(schema: Any, named: dict[str, Any] | None = None) -> Any:
    """The shape of an Avro schema as far as its binary encoding goes: records as ((field, shape)...),
    arrays as ("array", shape), primitives by name (logical types and docs dropped; a named type
    used again by name resolves to its shape)."""
    named = {} if named is None else named
    if isinstance(schema, str):
        return named.get(schema, schema)
    if isinstance(schema, list):
        return ("union", tuple(layout(s, named) for s in schema))
    kind = schema["type"]
    if kind == "record":
        shape = tuple((f["name"], layout(f["type"], named)) for f in schema["fields"])
        named[schema["name"]] = shape
        if "namespace" in schema:
            named[f"{schema['namespace']}.{schema['name']}"] = shape
        return shape
    if kind == "array":
        return ("array", layout(schema["items"], named))
    if isinstance(kind, (dict, list)):
        return layout(kind, named)
    if kind in ("enum", "fixed", "map"):
        return (kind, str(sorted((k, str(v)) for k, v in schema.items() if k != "doc")))
    return kind  # a primitive with a logical type: its encoding is the primitive's


def _long(data: bytes, pos: int) -> tuple[int, int]:
    """A zig-zag varint long at ``pos``; the position after it."""
    b = data[pos]
    pos += 1
    n = b & 0x7F
    shift = 7
    while b & 0x80:
        b = data[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if shift > 70:
            raise WireFormatError("varint longer than a long")
    return (n >> 1) ^ -(n & 1), pos


def _string(data: bytes, pos: int) -> tuple[str, int]:
    size, pos = _long(data, pos)
    end = pos + size
    if size < 0 or end > len(data):
        raise WireFormatError(f"string of {size} bytes at {pos} runs past the body")
    return data[pos:end].decode(), end


def _levels(data: bytes, pos: int) -> tuple[np.ndarray, int]:
    """An array of (price, qty) records: (levels x 2) float64, the position after it."""
    blocks = []
    while True:
        count, pos = _long(data, pos)
        if count == 0:
            break
        if count < 0:  # a block with its byte size
            count = -count
            _, pos = _long(data, pos)
        end = pos + 16 * count
        if end > len(data):
            raise WireFormatError(f"{count} levels at {pos} run past the body")
        blocks.append(np.frombuffer(data, dtype="<f8", count=2 * count, offset=pos).reshape(count, 2))
        pos = end
    if len(blocks) == 1:
        return blocks[0], pos
    return (np.concatenate(blocks) if blocks else np.empty((0, 2))), pos


def _read(data: bytes) -> tuple[str, str, int, int, int, np.ndarray, np.ndarray, float, BookLevels]:
    pos = HEADER_SIZE
    exchange, pos = _string(data, pos)
    symbol, pos = _string(data, pos)
    update_id, pos = _long(data, pos)
    event_time, pos = _long(data, pos)
    receive_time, pos = _long(data, pos)
    bids, pos = _levels(data, pos)
    asks, pos = _levels(data, pos)
    if pos + 8 != len(data):
        raise WireFormatError(f"md.book body of {len(data)} bytes does not end after obi_10 at {pos + 8}")
    (obi,) = _DOUBLE.unpack_from(data, pos)
    n_bids, n = len(bids), len(bids) + len(asks)
    columns = np.empty(2 * n)
    columns[:n_bids] = bids[:, 0]
    columns[n_bids:n] = asks[:, 0]
    columns[n : n + n_bids] = bids[:, 1]
    columns[n + n_bids :] = asks[:, 1]
    return exchange, symbol, update_id, event_time, receive_time, bids, asks, obi, BookLevels(columns, n_bids)


def decode_book(data: bytes) -> BookUpdate:
    """A framed md.book record written with ``LAYOUT`` as a ``BookUpdate`` with ``BookLevels``."""
    exchange, symbol, _, event_time, _, _, _, obi, levels = _read(data)
    return BookUpdate(exchange, symbol, event_time, obi, levels)


def decode_book_record(data: bytes) -> BookRecord:
    """The same as the record (``AvroSerde.decode``'s dict, equal to it) with its ``columns``."""
    exchange, symbol, update_id, event_time, receive_time, bids, asks, obi, levels = _read(data)
    return BookRecord(
        {
            "exchange": exchange,
            "symbol": symbol,
            "last_update_id": update_id,
            "event_time": event_time,
            "receive_time": receive_time,
            "bids": [{"price": p, "qty": q} for p, q in bids.tolist()],
            "asks": [{"price": p, "qty": q} for p, q in asks.tolist()],
            "obi_10": obi,
        },
        levels,
    )


class BookDecoder:
    """Framed md.book bytes -> ``BookUpdate`` (``records``: the record, a ``BookRecord``):
    ``decode_book``/``decode_book_record`` for the writer schemas with ``LAYOUT``, the serde (and
    ``book_from_record``) for any other, decided once per schema id."""

    def __init__(self, serde: AvroSerde, *, records: bool = False) -> None:
        self._serde = serde
        self._fast: Callable[[bytes], Any] = decode_book_record if records else decode_book
        self._slow = serde.decode if records else self._update
        self._readers: dict[int, Callable[[bytes], Any]] = {}

    def __call__(self, data: bytes) -> Any:
        schema_id = peek_schema_id(data)
        reader = self._readers.get(schema_id)
        if reader is None:
            known = layout(self._serde.registry.schema_for(schema_id)) == LAYOUT
            reader = self._readers[schema_id] = self._fast if known else self._slow
        return reader(data)

    def _update(self, data: bytes) -> BookUpdate:
        return book_from_record(self._serde.decode(data))
