"""Backward compatibility of a schema change: can the new schema (reader) read every record written
with the previous version (writer)? Consumers upgrade first and must still read the retained topic
data, so this is the one rule every `.avsc` change has to pass (Confluent's BACKWARD level).

Why hand-rolled: fastavro resolves a writer/reader pair while decoding, record by record, but has
no function that compares two schemas as a whole; the Confluent checker lives in the Java registry,
which the embedded mode does not run. The rules below are the Avro specification's "Schema
Resolution" section, applied to every branch a writer could produce:
- records match by unqualified name (or a reader alias); a reader field missing from the writer
  needs a default; writer fields the reader dropped are skipped;
- enums match by name; every writer symbol must exist in the reader unless the reader enum has a
  default symbol;
- fixed types match by name and size; arrays and maps by their item/value types;
- primitives must be equal or promoted: int -> long, float, double; long -> float, double;
  float -> double; string -> bytes. One deliberate deviation: the spec also allows bytes -> string,
  but reading bytes that are not UTF-8 as a string fails (the sample check below caught it on the
  dead-letter `value`, which holds arbitrary raw frames), so it is reported as incompatible;
- a writer union: every branch must be readable; a reader union: the first reader branch that
  matches the writer type is used, and must then be readable.
Logical types are ignored: they do not change the encoding.

The rule check is backed empirically by `sample_backward_failures`: random records generated from
the old schema (fastavro.utils.generate_many) are written with it and read with the new one by
fastavro's own resolver, so a gap in either implementation shows up as a disagreement in the tests.
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass
from typing import Any

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.utils import generate_many

from schemas.avsc import strip_logical_types
from schemas.errors import IncompatibleSchemaError

PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
PROMOTIONS: dict[str, frozenset[str]] = {
    "int": frozenset({"long", "float", "double"}),
    "long": frozenset({"float", "double"}),
    "float": frozenset({"double"}),
    "string": frozenset({"bytes"}),
    # "bytes": {"string"} is legal Avro but fails on non-UTF-8 data: refused, see the module docstring.
}
NAMED = frozenset({"record", "enum", "fixed"})


@dataclass(frozen=True)
class Incompatibility:
    """One reason the new schema cannot read old data; `path` locates it, e.g. Trade.taker_side."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def _compile(schema: Any) -> tuple[Any, dict[str, Any]]:
    """fastavro-parse `schema` (fully qualified names, validated defaults) and its named types."""
    named: dict[str, Any] = {}
    parsed = parse_schema(strip_logical_types(schema), named_schemas=named, _write_hint=False)
    return parsed, named


def _type_of(schema: Any) -> str:
    if isinstance(schema, list):
        return "union"
    if isinstance(schema, dict):
        return schema["type"]
    return schema


def _unqualified(name: str) -> str:
    return name.rsplit(".", 1)[-1]


class _Resolver:
    """Walks a reader/writer pair and collects every resolution failure."""

    def __init__(self, reader_named: dict[str, Any], writer_named: dict[str, Any]):
        self.reader_named = reader_named
        self.writer_named = writer_named
        self.problems: list[Incompatibility] = []
        self._visiting: set[tuple[str, str]] = set()

    def _deref(self, schema: Any, named: dict[str, Any]) -> Any:
        if isinstance(schema, str) and schema not in PRIMITIVES:
            return named[schema]
        return schema

    def _names_match(self, reader: dict, writer: dict) -> bool:
        aliases = reader.get("aliases", [])
        return (
            _unqualified(reader["name"]) == _unqualified(writer["name"])
            or writer["name"] in aliases
            or _unqualified(writer["name"]) in aliases
        )

    def _same_kind(self, reader: Any, writer: Any) -> bool:
        """The spec's notion of 'matches', used to pick a reader union branch."""
        rt, wt = _type_of(reader), _type_of(writer)
        if rt in NAMED and wt == rt:
            return self._names_match(reader, writer)
        if rt in ("array", "map"):
            return wt == rt
        return rt == wt or rt in PROMOTIONS.get(wt, ())

    def check(self, reader: Any, writer: Any, path: str) -> None:
        reader = self._deref(reader, self.reader_named)
        writer = self._deref(writer, self.writer_named)
        rt, wt = _type_of(reader), _type_of(writer)

        if wt == "union":
            for branch in writer:
                self.check(reader, branch, path)
            return
        if rt == "union":
            branches = [self._deref(b, self.reader_named) for b in reader]
            match = next((b for b in branches if self._same_kind(b, writer)), None)
            if match is None:
                self._problem(
                    path,
                    f"writer type {_describe(writer)} is not in reader union "
                    f"[{', '.join(_describe(b) for b in branches)}]",
                )
            else:
                self.check(match, writer, path)
            return
        if rt != wt:
            if rt not in PROMOTIONS.get(wt, ()):
                self._problem(path, f"type changed from {_describe(writer)} to {_describe(reader)}")
            return
        if rt in NAMED and not self._names_match(reader, writer):
            self._problem(path, f"{rt} name changed from {writer['name']} to {reader['name']}")
            return
        if rt == "record":
            self._check_record(reader, writer, path)
        elif rt == "enum":
            missing = [s for s in writer["symbols"] if s not in reader["symbols"]]
            if missing and "default" not in reader:
                self._problem(path, f"enum {reader['name']} lost symbol(s) {', '.join(missing)} and has no default")
        elif rt == "fixed":
            if reader["size"] != writer["size"]:
                self._problem(path, f"fixed {reader['name']} size changed from {writer['size']} to {reader['size']}")
        elif rt == "array":
            self.check(reader["items"], writer["items"], path + "[]")
        elif rt == "map":
            self.check(reader["values"], writer["values"], path + "{}")

    def _check_record(self, reader: dict, writer: dict, path: str) -> None:
        key = (reader["name"], writer["name"])
        if key in self._visiting:  # recursive type: this pair is already being checked
            return
        self._visiting.add(key)
        try:
            writer_fields = {f["name"]: f for f in writer["fields"]}
            for field in reader["fields"]:
                names = [field["name"], *field.get("aliases", [])]
                wfield = next((writer_fields[n] for n in names if n in writer_fields), None)
                fpath = f"{path}.{field['name']}"
                if wfield is not None:
                    self.check(field["type"], wfield["type"], fpath)
                elif "default" not in field:
                    self._problem(fpath, "field added without a default")
        finally:
            self._visiting.discard(key)

    def _problem(self, path: str, message: str) -> None:
        self.problems.append(Incompatibility(path, message))


def _describe(schema: Any) -> str:
    t = _type_of(schema)
    return f"{t} {schema['name']}" if t in NAMED else t


def backward_incompatibilities(new: Any, old: Any) -> list[Incompatibility]:
    """Why `new` cannot read data written with `old` (empty list: backward compatible)."""
    reader, reader_named = _compile(new)
    writer, writer_named = _compile(old)
    resolver = _Resolver(reader_named, writer_named)
    root = _unqualified(reader["name"]) if isinstance(reader, dict) and "name" in reader else _type_of(reader)
    resolver.check(reader, writer, root)
    return resolver.problems


def sample_backward_failures(new: Any, old: Any, samples: int = 200, seed: int = 0) -> list[str]:
    """Write `samples` random records of `old`, read them with `new`; distinct fastavro errors.

    Seeded and isolated from the global random state (generate_many draws from `random`), so the
    same pair of schemas always yields the same sample.
    """
    writer, _ = _compile(old)
    reader, _ = _compile(new)
    saved = random.getstate()
    random.seed(seed)
    try:
        records = list(generate_many(writer, samples))
    finally:
        random.setstate(saved)
    failures: list[str] = []
    for record in records:
        buf = io.BytesIO()
        schemaless_writer(buf, writer, record)
        buf.seek(0)
        try:
            schemaless_reader(buf, writer, reader)
        except Exception as exc:  # fastavro raises SchemaResolutionError, ValueError, KeyError...
            message = _shorten(f"{type(exc).__name__}: {exc}")
            if message not in failures:
                failures.append(message)
    return failures


def _shorten(message: str, limit: int = 300) -> str:
    """fastavro embeds whole parsed schemas in some messages; keep log lines readable."""
    return message if len(message) <= limit else message[: limit - 3] + "..."


def check_backward(new: Any, old: Any, *, subject: str = "schema", samples: int = 200) -> None:
    """Raise IncompatibleSchemaError listing every rule violation and sample failure."""
    problems = [str(p) for p in backward_incompatibilities(new, old)]
    if samples:
        problems += [f"sample records: {f}" for f in sample_backward_failures(new, old, samples)]
    if problems:
        raise IncompatibleSchemaError(
            f"{subject}: new schema cannot read data written with the previous version: " + "; ".join(problems)
        )
