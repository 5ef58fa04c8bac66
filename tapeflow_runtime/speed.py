"""A replay's pace as the user writes it, one way for every command: `up --replay-speed`,
`TAPEFLOW_REPLAY_SPEED`, `replay --speed` and the fake exchange's `--speed` all take `max` or a
positive factor, written `10` or `10x`."""

from __future__ import annotations

import math
from typing import Any


def parse_speed(value: Any) -> float | None:
    """The factor (1.0 = as the events happened), or None for `max` (no waiting at all).
    Raises ValueError with what is expected."""
    text = str(value).strip().lower()
    if text == "max":
        return None
    try:
        factor = float(text.removesuffix("x"))
    except ValueError:
        factor = math.nan
    if not (factor > 0 and math.isfinite(factor)):
        raise ValueError(f"expected 1x, 10x, ... (the x is optional) or max, got {value!r}")
    return factor


def speed_text(factor: float | None) -> str:
    """What `parse_speed` reads back exactly: `max`, or the factor (no needless `.0`; `:g` would round
    to 6 digits, so 1234567 came back as 1234570)."""
    if factor is None:
        return "max"
    return str(int(factor)) if factor.is_integer() else repr(factor)
