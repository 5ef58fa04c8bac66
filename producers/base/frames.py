"""The error every venue's parser raises for a frame it cannot normalise, and the rules they share.

The producer catches it, dead-letters the raw frame with the reason and keeps going; one class for
every venue lets the shared dispatch (`producers.base.venue`) handle them alike. `normalising(kind)`
turns what a malformed frame makes a parser raise into that error; `finite_number` is the number rule.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

# what indexing, unpacking and converting a frame of the wrong shape raises (ArithmeticError: decimal
# overflow and its relatives, for parsers that read numbers exactly)
MALFORMED = (AttributeError, KeyError, TypeError, ValueError, ArithmeticError, IndexError)


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


def normalising(kind: str) -> Callable[[F], F]:
    """Decorate a parser of `kind` frames: the errors of a malformed frame (`MALFORMED`) become one-line
    `FrameError`s naming the kind; a `FrameError` the parser raised itself passes unchanged."""

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def inner(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except FrameError:
                raise
            except MALFORMED as exc:
                raise FrameError(f"bad {kind} frame: {type(exc).__name__}: {exc}".replace("\n", " ")) from None

        return inner  # type: ignore[return-value]

    return wrap
