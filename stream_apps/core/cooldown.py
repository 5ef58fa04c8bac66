"""Per-strategy memory of emitted signals: cooldown per symbol x direction and flip detection.

Why plain data: the old system kept cooldown timestamps in process memory, so every restart re-fired
signals that were still cooling down (and the V5.4 scorer computed ``in_cooldown`` but never used it).
A ``CooldownBook`` is a dict of integers that a Faust table (or the backtest checkpoint) stores and
restores; the engine consults it for every evaluation. Its size is bounded by symbols x 2 directions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from schemas.catalogue import market_key


def _key(exchange: str, symbol: str, direction: str) -> str:
    return f"{exchange}:{symbol}:{direction}"


@dataclass
class CooldownBook:
    """Last emission time per ``exchange:symbol:direction`` and last signal per ``exchange:symbol``."""

    last_fired_ms: dict[str, int] = field(default_factory=dict)
    last_signal: dict[str, tuple[str, int]] = field(default_factory=dict)  # symbol key -> (direction, time)

    def in_cooldown(self, exchange: str, symbol: str, direction: str, now_ms: int, cooldown_ms: int) -> bool:
        last = self.last_fired_ms.get(_key(exchange, symbol, direction))
        return last is not None and now_ms - last < cooldown_ms

    def previous_signal(self, exchange: str, symbol: str) -> tuple[str, int] | None:
        return self.last_signal.get(market_key(exchange, symbol))

    def record(self, exchange: str, symbol: str, direction: str, now_ms: int) -> None:
        self.last_fired_ms[_key(exchange, symbol, direction)] = int(now_ms)
        self.last_signal[market_key(exchange, symbol)] = (direction, int(now_ms))

    def symbol_state(self, exchange: str, symbol: str, never: int) -> np.ndarray:
        """This symbol's entries as [last LONG, last SHORT, previous direction (+1/-1, 0 none), previous
        time] (``never`` for a missing time), the form ``kernels.cooldown_rows`` reads and updates."""
        long_ = self.last_fired_ms.get(_key(exchange, symbol, "LONG"), never)
        short = self.last_fired_ms.get(_key(exchange, symbol, "SHORT"), never)
        previous = self.last_signal.get(market_key(exchange, symbol))
        direction = 0 if previous is None else (1 if previous[0] == "LONG" else -1)
        return np.array([long_, short, direction, never if previous is None else previous[1]], dtype=np.int64)

    def set_symbol_state(self, exchange: str, symbol: str, state: np.ndarray, never: int) -> None:
        long_, short, direction, when = (int(v) for v in state)
        for name, value in (("LONG", long_), ("SHORT", short)):
            if value != never:
                self.last_fired_ms[_key(exchange, symbol, name)] = value
        if direction:
            self.last_signal[market_key(exchange, symbol)] = ("LONG" if direction > 0 else "SHORT", when)

    def to_dict(self) -> dict[str, Any]:
        return {
            "last_fired_ms": dict(self.last_fired_ms),
            "last_signal": {k: [d, t] for k, (d, t) in self.last_signal.items()},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CooldownBook:
        return cls(
            {k: int(v) for k, v in data.get("last_fired_ms", {}).items()},
            {k: (v[0], int(v[1])) for k, v in data.get("last_signal", {}).items()},
        )
