"""Durations written the way strategy files and the old system wrote them ("30m", "4h", "15s").

Why not plain integers: windows and cooldowns are easier to review as "4h" than as 14400000, and the
parser rejects anything ambiguous instead of falling back to a default (the old loader silently turned
an invalid window code into 30 minutes).
"""

from __future__ import annotations

import re

_UNIT_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_PATTERN = re.compile(r"^\s*(\d+)\s*(ms|s|m|h|d)\s*$")


def parse_duration_ms(value: str | int) -> int:
    """``"30m"`` -> 1_800_000. Integers are taken as milliseconds. Raises ValueError when invalid."""
    if isinstance(value, bool):
        raise ValueError("a duration cannot be a boolean")  # noqa: TRY004 - pydantic reports ValueError
    if isinstance(value, int):
        if value <= 0:
            raise ValueError(f"duration must be positive, got {value}")
        return value
    if not isinstance(value, str):
        raise ValueError(f"duration must be a string like '30m' or an integer of ms, got {value!r}")  # noqa: TRY004
    match = _PATTERN.match(value)
    if not match:
        raise ValueError(f"invalid duration {value!r}: use <integer><ms|s|m|h|d>, e.g. '30m'")
    amount = int(match.group(1))
    if amount <= 0:
        raise ValueError(f"duration must be positive, got {value!r}")
    return amount * _UNIT_MS[match.group(2)]


def parse_duration_or_zero_ms(value: str | int) -> int:
    """``parse_duration_ms`` that also takes zero (``0``, ``"0s"``, ``"0ms"``...): a setting's "off"."""
    if not isinstance(value, bool) and (
        value == 0 or (isinstance(value, str) and _PATTERN.match(value) and int(_PATTERN.match(value).group(1)) == 0)
    ):
        return 0
    return parse_duration_ms(value)


def format_duration_ms(ms: int) -> str:
    """1_800_000 -> ``"30m"`` (largest unit that divides exactly)."""
    for unit in ("d", "h", "m", "s"):
        size = _UNIT_MS[unit]
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"
