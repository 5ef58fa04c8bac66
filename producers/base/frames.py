"""The error every venue's parser raises for a frame it cannot normalise, and the number rule they share.

The producer catches it, dead-letters the raw frame with the reason and keeps going; one class for
every venue lets the shared dispatch (`producers.base.venue`) handle them alike.
"""

from __future__ import annotations

import math
from typing import Any


class FrameError(ValueError):
    """A frame that cannot be normalised (missing field, wrong type, unknown event)."""


def finite_number(raw: Any, field: str) -> float:
    """A finite float from an exchange number (often sent as text). "nan"/"inf" would parse and poison
    every bar and feature downstream, and a boolean is not a number: TypeError/ValueError naming
    ``field``, which each venue's parser turns into a ``FrameError``."""
    if isinstance(raw, bool):
        raise TypeError(f"{field}={raw!r} is not a number")
    value = float(raw)
    if not math.isfinite(value):
        raise ValueError(f"{field}={raw!r} is not finite")
    return value
