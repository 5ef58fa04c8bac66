"""The answer of a health probe, shared by the supervisor's services and the Kafka/database helpers."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Health:
    ok: bool
    detail: str
