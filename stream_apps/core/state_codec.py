"""The plain-data form of a symbol state (``SymbolState.to_dict`` / ``from_dict``).

Why in one place: the engine's snapshot (a Faust table's value, a replay's warm start) holds these
dicts, so the keys, their order and their values are a format: a restored state must continue
exactly as the saved one, and the same state must give the same bytes (parity checks compare
them). Optional parts are absent when off, so states without them keep the form they always had.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from .atr import WilderATR
from .bars import BarBuilder
from .market_records import MarketRecords
from .params import Counters
from .ring import BucketRing
from .size_thresholds import SizeThresholds

if TYPE_CHECKING:
    from .symbol_state import SymbolState


def state_to_dict(state: SymbolState) -> dict[str, Any]:
    """The state as plain data (JSON-ready; key order is part of the snapshot bytes)."""
    data = {
        "exchange": state.exchange,
        "symbol": state.symbol,
        "params": asdict(state.params),
        "counters": asdict(state.counters),
        "last_agg_id": state.last_agg_id,
        "last_price": state.last_price,
        "last_trade_ms": state.last_trade_ms,
        "first_trade_ms": state.first_trade_ms,
        "coverage_start_ms": state.coverage_start_ms,
        "approx_until_ms": state.approx_until_ms,
        "head_second": state.head_second,
        "sealed_ms": state.sealed_ms,
        **state.sizes.to_dict(),
        "seconds": state.windows.seconds.to_dict(),
        "minutes": state.windows.minutes.to_dict(),
        "qty_hist": state.sizes.qty_hist.to_dict(),
        "bars_1m": state.bars_1m.to_dict(),
        "bars_atr": state.bars_atr.to_dict(),
        "atr": state.atr.to_dict(),
        "market": state.market.to_dict(),
    }
    data.update(state.detector_set.to_dict())  # absent when off: snapshots stay as they were
    return data


def restore_state(state: SymbolState, data: dict[str, Any]) -> None:
    """Load ``state_to_dict``'s data into ``state`` (made with the saved exchange, symbol and params)."""
    state.counters = Counters(**data["counters"])
    for name in (
        "last_agg_id",
        "last_price",
        "last_trade_ms",
        "first_trade_ms",
        "coverage_start_ms",
        "head_second",
        "sealed_ms",
    ):
        setattr(state, name, data[name])
    state.approx_until_ms = data.get(
        "approx_until_ms"
    )  # (absent from states saved before the warm start's approximation)
    state.sizes = SizeThresholds.from_dict(state.params, data, data["qty_hist"])
    state.windows.seconds = BucketRing.from_dict(data["seconds"])
    state.windows.minutes = BucketRing.from_dict(data["minutes"])
    state.bars_1m = BarBuilder.from_dict(data["bars_1m"])
    state.bars_atr = BarBuilder.from_dict(data["bars_atr"])
    state.atr = WilderATR.from_dict(data["atr"])
    state.market = MarketRecords.from_dict(data["market"], state.params, state.counters)
    state.detector_set.restore(data)
