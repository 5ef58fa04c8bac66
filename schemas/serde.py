"""Avro values in the Confluent wire format: magic byte 0, 4-byte big-endian schema id, Avro body.

The framing lets a real Schema Registry (docker-compose) and the committed file registry (embedded
mode) be swapped without touching producers or consumers, and lets any Confluent-aware tool decode
our topics.

Speed: schemas are compiled once per topic and per writer id and the framing header is
precomputed, so `encode` is one fastavro `schemaless_writer` call plus a bytes join. Full
validation (fastavro `validate`) costs about as much as the encoding itself, which would halve the
producers' 100k msgs/s/core budget, so it is opt-in (`strict=True`, for tests and tools). Without
it, fastavro's writer still rejects what it cannot encode (a string for a double, an unknown enum
symbol, a missing required field, a value matching no union branch); only then is the record
validated, to turn fastavro's message into one that names the topic and the field. What the
non-strict writer lets through are coercions: a numeric string for a double is parsed ("67012.40"),
a float for a long is truncated, a bool for a number is written as 0/1, unknown keys are ignored.

Timestamps: the serde compiles the logical-type-free twin of each schema (see schemas.avsc), so
`*_time` fields are written from and read back as int epoch milliseconds, never `datetime`.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.read import SchemaResolutionError
from fastavro.validation import ValidationError, validate

from schemas.avsc import load_avsc, strip_logical_types
from schemas.catalogue import topic as topic_spec
from schemas.errors import (
    IncompatibleSchemaError,
    SchemaValidationError,
    WireFormatError,
)
from schemas.registry import SchemaRegistry

MAGIC_BYTE = 0
_HEADER = struct.Struct(">bI")
HEADER_SIZE = _HEADER.size  # 5


def compile_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """fastavro-parse the logical-type-free twin of `schema` (what the serde reads and writes with)."""
    return parse_schema(strip_logical_types(schema))


def frame_header(schema_id: int) -> bytes:
    """The 5-byte Confluent header for `schema_id`."""
    return _HEADER.pack(MAGIC_BYTE, schema_id)


def peek_schema_id(data: bytes) -> int:
    """Schema id of a framed message, checking the magic byte and length."""
    if len(data) < HEADER_SIZE:
        raise WireFormatError(f"{len(data)} bytes: too short for the {HEADER_SIZE}-byte Confluent header")
    magic, schema_id = _HEADER.unpack_from(data)
    if magic != MAGIC_BYTE:
        raise WireFormatError(f"magic byte {magic & 0xFF} (expected {MAGIC_BYTE}): not a Confluent-framed Avro message")
    return schema_id


@dataclass(frozen=True)
class _TopicCodec:
    schema_id: int
    header: bytes
    parsed: dict[str, Any]


class AvroSerde:
    """Encode records for a catalogue topic and decode framed messages, resolving ids via a registry."""

    def __init__(self, registry: SchemaRegistry, *, strict: bool = False):
        self.registry = registry
        self.strict = strict
        self._topics: dict[str, _TopicCodec] = {}
        self._writers: dict[int, dict[str, Any]] = {}
        self._readers: dict[int, tuple[dict[str, Any], dict[str, Any]]] = {}

    # --- schemas ----------------------------------------------------------------------------------
    def _codec(self, topic: str) -> _TopicCodec:
        codec = self._topics.get(topic)
        if codec is None:
            spec = topic_spec(topic)
            schema = load_avsc(spec.value_schema)
            schema_id = self.registry.id_for(spec.value_subject, schema)
            codec = _TopicCodec(schema_id, frame_header(schema_id), compile_schema(schema))
            self._topics[topic] = codec
            self._writers.setdefault(schema_id, codec.parsed)
        return codec

    def schema_id(self, topic: str) -> int:
        """Id under which records of `topic` are written."""
        return self._codec(topic).schema_id

    def _writer_schema(self, schema_id: int) -> dict[str, Any]:
        parsed = self._writers.get(schema_id)
        if parsed is None:
            parsed = compile_schema(self.registry.schema_for(schema_id))
            self._writers[schema_id] = parsed
        return parsed

    def _reader_schema(self, reader_schema: dict[str, Any]) -> dict[str, Any]:
        cached = self._readers.get(id(reader_schema))
        if cached is None or cached[0] is not reader_schema:
            cached = (reader_schema, compile_schema(reader_schema))
            self._readers[id(reader_schema)] = cached
        return cached[1]

    # --- encode ---------------------------------------------------------------------------------
    def encode(self, topic: str, record: Mapping[str, Any]) -> bytes:
        """Framed Avro bytes of `record` for `topic`; SchemaValidationError names the bad field."""
        codec = self._topics.get(topic) or self._codec(topic)
        if self.strict:
            _validate(topic, codec.parsed, record)
            _reject_unknown_fields(topic, codec.parsed, record)
        buf = io.BytesIO()
        buf.write(codec.header)
        try:
            schemaless_writer(buf, codec.parsed, record, strict_allow_default=self.strict)
        except Exception as exc:  # fastavro raises ValueError, TypeError, KeyError, AttributeError...
            _validate(topic, codec.parsed, record)
            _reject_unknown_fields(topic, codec.parsed, record)
            raise SchemaValidationError(topic, "", f"record does not match the schema: {exc}") from exc
        return buf.getvalue()

    # --- decode ---------------------------------------------------------------------------------
    def decode(
        self, data: bytes, *, topic: str | None = None, reader_schema: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """The record in framed `data`, as written (default), or resolved to a reader schema.

        `topic=` reads with that topic's current schema (schema evolution: fields added since the
        record was written get their defaults, removed ones are dropped); `reader_schema=` with an
        explicit schema dict (compiled once per dict object).
        """
        schema_id = peek_schema_id(data)
        writer = self._writers.get(schema_id) or self._writer_schema(schema_id)
        reader = None
        if topic is not None:
            codec = self._topics.get(topic) or self._codec(topic)
            if codec.schema_id != schema_id:
                reader = codec.parsed
        elif reader_schema is not None:
            reader = self._reader_schema(reader_schema)
        buf = io.BytesIO(data)
        buf.seek(HEADER_SIZE)
        try:
            record = schemaless_reader(buf, writer, reader)
        except SchemaResolutionError as exc:
            raise IncompatibleSchemaError(
                f"schema id {schema_id} cannot be read with the reader schema: {exc}"
            ) from None
        except (EOFError, ValueError, IndexError, struct.error) as exc:
            raise WireFormatError(
                f"schema id {schema_id}: truncated or corrupt Avro body ({type(exc).__name__}: {exc})"
            ) from None
        if buf.tell() != len(data):
            raise WireFormatError(f"schema id {schema_id}: {len(data) - buf.tell()} trailing bytes after the Avro body")
        return record


def _validate(topic: str, parsed: dict[str, Any], record: Any) -> None:
    """Raise SchemaValidationError for the first invalid field of `record`, if any."""
    try:
        validate(record, parsed, raise_errors=True)
    except ValidationError as exc:
        errors = exc.errors
        first = errors[0]
        field = _field_name(first.field, parsed.get("name", ""))
        expected = [_describe(e.schema) for e in errors if e.field == first.field]
        wanted = expected[0] if len(expected) == 1 else "one of " + ", ".join(expected)
        datum = first.datum
        got = "nothing (missing or None)" if datum is None else f"{type(datum).__name__} {_short_repr(datum)}"
        what = f"field {field!r}" if field else "record"
        raise SchemaValidationError(topic, field, f"{what} expected {wanted}, got {got}") from None


def _reject_unknown_fields(topic: str, parsed: dict[str, Any], record: Any) -> None:
    """Strict mode: a key the schema does not have is usually a typo that would silently vanish."""
    if isinstance(record, Mapping):
        known = {f["name"] for f in parsed["fields"]}
        unknown = sorted(k for k in record if k not in known)
        if unknown:
            raise SchemaValidationError(
                topic, unknown[0], f"field {unknown[0]!r} is not in the schema (unknown field(s): {', '.join(unknown)})"
            )


def _field_name(qualified: str, record_name: str) -> str:
    """'tapeflow.Trade.price' -> 'price'; nested records keep their type: 'PriceLevel.price'."""
    if record_name and qualified.startswith(record_name + "."):
        return qualified[len(record_name) + 1 :]
    namespace = record_name.rpartition(".")[0]
    if namespace and qualified.startswith(namespace + "."):
        return qualified[len(namespace) + 1 :]
    return qualified


def _describe(schema: Any) -> str:
    if isinstance(schema, list):
        return "one of " + ", ".join(_describe(s) for s in schema)
    if isinstance(schema, dict):
        kind = schema["type"]
        if kind == "enum":
            return f"enum {schema['name'].rpartition('.')[2]} {schema['symbols']}"
        if kind in ("record", "fixed"):
            return f"{kind} {schema['name'].rpartition('.')[2]}"
        if kind == "array":
            return f"array of {_describe(schema['items'])}"
        if kind == "map":
            return f"map of {_describe(schema['values'])}"
        return str(kind)
    return str(schema).rpartition(".")[2]


def _short_repr(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
