"""Exceptions of the schemas package, in one module so serde, registries and the CLI share them
without import cycles. Every message names the topic, subject or schema id involved, because these
errors surface in logs of long-running consumers where the call site alone says little."""

from __future__ import annotations


class SchemaError(Exception):
    """Base class of every error raised by the schemas package."""


class UnknownTopicError(SchemaError, KeyError):
    """A topic name that is not in the catalogue. Subclasses KeyError so mapping-style callers work."""

    def __init__(self, name: str, valid: list[str]):
        self.name = name
        self.valid = valid
        super().__init__(f"unknown topic {name!r}; valid topics: {', '.join(valid)}")

    def __str__(self) -> str:  # KeyError would repr() the message, quoting it
        return str(self.args[0])


class SchemaValidationError(SchemaError, ValueError):
    """A record that does not match its topic's schema. `field` is the offending field's name."""

    def __init__(self, topic: str, field: str, message: str):
        self.topic = topic
        self.field = field
        super().__init__(f"{topic}: {message}")


class WireFormatError(SchemaError, ValueError):
    """Bytes that are not a well-formed Confluent-framed Avro message (bad magic byte, truncated...)."""


class UnknownSchemaIdError(SchemaError, LookupError):
    """A schema id the registry does not know."""

    def __init__(self, schema_id: int, where: str):
        self.schema_id = schema_id
        super().__init__(f"schema id {schema_id} is not in {where}")


class UnregisteredSchemaError(SchemaError, LookupError):
    """A schema that has no version under its subject (file registry: run `python -m schemas.registry update`)."""


class IncompatibleSchemaError(SchemaError):
    """A new schema version that cannot read data written with the previous version."""


class SchemaRegistryError(SchemaError):
    """A Schema Registry request that failed for another reason (HTTP error, unreachable, bad reply).
    `status` is the HTTP status when the server answered."""

    def __init__(self, message: str, status: int | None = None):
        self.status = status
        super().__init__(message)
