"""The committed `.avsc` files and the logical-type-free copies the serde compiles.

Why strip logical types: they never change the binary encoding (timestamp-millis is a plain Avro
long on the wire), but fastavro turns them into `datetime` objects on read, which costs more than
decoding the rest of a trade and gives the engine objects it would convert straight back to epoch
milliseconds. The registered schemas keep the annotations for Kafka Connect, kcat and other
readers; tapeflow's own code reads and writes plain ints.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

AVRO_DIR = Path(__file__).resolve().parent / "avro"


def avsc_path(stem: str) -> Path:
    return AVRO_DIR / f"{stem}.avsc"


def avsc_stems() -> list[str]:
    """Stems (file names without `.avsc`) of every committed schema file, sorted."""
    return sorted(p.stem for p in AVRO_DIR.glob("*.avsc"))


@cache
def _load_text(stem: str) -> str:
    return avsc_path(stem).read_text(encoding="utf-8")


def load_avsc(stem: str) -> dict[str, Any]:
    """The schema in `avro/<stem>.avsc` as a fresh dict (callers may mutate it)."""
    return json.loads(_load_text(stem))


def strip_logical_types(schema: Any) -> Any:
    """A deep copy of `schema` without `logicalType` annotations on primitive types.

    Only annotations on primitives are removed (timestamp-millis on long and the like); the types
    themselves, names, defaults and docs are kept, so the result has the same binary encoding.
    """
    if isinstance(schema, list):
        return [strip_logical_types(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {}
    for k, v in schema.items():
        if k == "logicalType" and isinstance(schema.get("type"), str):
            continue
        out[k] = strip_logical_types(v) if isinstance(v, (dict, list)) else v
    return out


def canonical_json(schema: Any) -> str:
    """Compact JSON with sorted object keys: equal for schemas that differ only in formatting.

    Field order (a list) is preserved, as it is significant in Avro. Docs, defaults and logical
    types are kept, unlike the Parsing Canonical Form, because defaults and logical types matter
    to readers; this is the identity the registries use to decide "same schema, same id".
    """
    return json.dumps(schema, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
