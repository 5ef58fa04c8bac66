"""Normalised inputs of the executor: signals, trade ticks and top-of-book, parsed once from Avro dicts.

Why a separate module: the pure core (position manager, paper broker, risk guard, executor) works on
small immutable values with the fields it needs, never on raw Avro dicts, so a schema change touches
one parser and the core stays testable without Kafka. Directions and sides are the schema's enum
symbols ("LONG"/"SHORT", "BUY"/"SELL"); every time is Unix milliseconds (UTC).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from execution.sizing import signal_multiplier
from schemas.catalogue import market_key
from stream_apps.core.rollout import CANARY_LEG_SUFFIX

Direction = Literal["LONG", "SHORT"]
Side = Literal["BUY", "SELL"]
Tier = Literal["standard", "heavy"]
TradingMode = Literal["paper", "testnet", "live"]
MODES: tuple[TradingMode, ...] = ("paper", "testnet", "live")


class InvalidSignal(ValueError):
    """A signal the executor cannot trade (inconsistent exit plan, unknown direction...)."""


def direction_sign(direction: str) -> int:
    """+1 for LONG, -1 for SHORT: multiplies price moves into P&L."""
    if direction == "LONG":
        return 1
    if direction == "SHORT":
        return -1
    raise ValueError(f"direction must be LONG or SHORT, got {direction!r}")


def entry_side(direction: str) -> Side:
    return "BUY" if direction_sign(direction) > 0 else "SELL"


def exit_side(direction: str) -> Side:
    return "SELL" if direction_sign(direction) > 0 else "BUY"


def quote_asset(symbol: str) -> str:
    """USD-M symbols end in their margin/quote asset (BTCUSDT -> USDT); fees are charged in it."""
    for quote in ("USDT", "USDC", "BUSD"):
        if symbol.split("_")[0].endswith(quote):
            return quote
    return "USDT"


@dataclass(frozen=True, slots=True)
class TradeTick:
    """One md.trades record, reduced to what fills and exits need."""

    exchange: str
    symbol: str
    agg_id: int
    price: float
    qty: float
    trade_time: int
    taker_side: Side

    @property
    def key(self) -> str:
        return market_key(self.exchange, self.symbol)

    @classmethod
    def from_record(cls, rec: Mapping[str, Any]) -> TradeTick:
        return cls(
            rec["exchange"],
            rec["symbol"],
            int(rec["agg_id"]),
            float(rec["price"]),
            float(rec["qty"]),
            int(rec["trade_time"]),
            rec["taker_side"],
        )


Levels = tuple[tuple[float, float], ...]  # (price, qty), best first


@dataclass(frozen=True, slots=True)
class BookTop:
    """Best bid and ask of one md.book snapshot (maker entry prices, mid for the slippage cap), and
    the snapshot's levels (the paper broker's book-based slippage walks them)."""

    exchange: str
    symbol: str
    best_bid: float | None
    best_ask: float | None
    event_time: int
    bids: Levels = ()
    asks: Levels = ()

    @property
    def key(self) -> str:
        return market_key(self.exchange, self.symbol)

    @property
    def mid(self) -> float | None:
        if self.best_bid is None or self.best_ask is None:
            return None
        return (self.best_bid + self.best_ask) / 2

    @classmethod
    def from_record(cls, rec: Mapping[str, Any]) -> BookTop:
        bids = tuple([(float(level["price"]), float(level["qty"])) for level in rec["bids"]])
        asks = tuple([(float(level["price"]), float(level["qty"])) for level in rec["asks"]])
        return cls(
            rec["exchange"],
            rec["symbol"],
            bids[0][0] if bids else None,
            asks[0][0] if asks else None,
            int(rec["event_time"]),
            bids,
            asks,
        )


@dataclass(frozen=True, slots=True)
class MarkTick:
    """One md.mark record, reduced to what funding needs: the mark price and the funding rate that the
    settlement at `next_funding_time` will charge (Binance's estimate until then; positive = longs pay)."""

    exchange: str
    symbol: str
    mark_price: float
    funding_rate: float
    next_funding_time: int
    event_time: int

    @property
    def key(self) -> str:
        return market_key(self.exchange, self.symbol)

    @classmethod
    def from_record(cls, rec: Mapping[str, Any]) -> MarkTick:
        return cls(
            rec["exchange"],
            rec["symbol"],
            float(rec["mark_price"]),
            float(rec["funding_rate"]),
            int(rec["next_funding_time"]),
            int(rec["event_time"]),
        )


def slot_of(strategy: str, exchange: str, symbol: str, signal_id: str) -> tuple[str, str, str]:
    """The slot that holds at most one position: strategy x exchange x symbol, except that a canary by
    size's candidate (its signal id ends with ``CANARY_LEG_SUFFIX``) holds its own slot beside the active
    revision's, so the two revisions' trades of a symbol never block or flip each other. From the
    signal id, which every position event carries, so a restarted executor finds the same slots."""
    if signal_id.endswith(CANARY_LEG_SUFFIX):
        return (strategy + CANARY_LEG_SUFFIX, exchange, symbol)
    return (strategy, exchange, symbol)


@dataclass(frozen=True, slots=True)
class Signal:
    """One `signals` record with its exit plan in R (schemas/avro/signal.avsc)."""

    signal_id: str
    strategy: str
    strategy_version: str
    config_hash: str
    exchange: str
    symbol: str
    eval_time: int
    direction: Direction
    tier: Tier
    score: float
    price: float
    atr: float
    risk_distance: float
    sl_r: float
    tp1_r: float
    tp2_r: float
    is_flip: bool
    # the multiple of 1R the signal risks: its size_mult (tier x confidence model), else its strategy's
    # multiplier for this tier (factors["risk_multiplier"]); None: the executor's (execution.sizing)
    risk_multiplier: float | None = None
    timeout_ms: int | None = None  # the strategy's exits.timeout_min in ms; None: the executor's own setting
    config_rev: int = 0  # the strategy's registered revision (0: an unregistered file, or a signal from before)

    @property
    def key(self) -> str:
        return market_key(self.exchange, self.symbol)

    @property
    def slot(self) -> tuple[str, str, str]:
        """At most one position per strategy x exchange x symbol (``slot_of``)."""
        return slot_of(self.strategy, self.exchange, self.symbol, self.signal_id)

    @classmethod
    def from_record(cls, rec: Mapping[str, Any]) -> Signal:
        """Parse and check the exit plan; InvalidSignal says what is wrong.

        1R is the stop distance by definition (DESIGN §5), so sl_r must be 1: a signal with another
        stop multiple would make "sl = -1R" false and is refused rather than silently re-scaled.
        ``timeout_ms`` is optional: signals written before the field existed carry none (None).
        """
        sig = cls(
            signal_id=rec["signal_id"],
            strategy=rec["strategy"],
            strategy_version=rec["strategy_version"],
            config_hash=rec["config_hash"],
            exchange=rec["exchange"],
            symbol=rec["symbol"],
            eval_time=int(rec["eval_time"]),
            direction=rec["direction"],
            tier=rec["tier"],
            score=float(rec["score"]),
            price=float(rec["price"]),
            atr=float(rec["atr"]),
            risk_distance=float(rec["risk_distance"]),
            sl_r=float(rec["sl_r"]),
            tp1_r=float(rec["tp1_r"]),
            tp2_r=float(rec["tp2_r"]),
            is_flip=bool(rec.get("is_flip", False)),
            risk_multiplier=signal_multiplier(rec),
            timeout_ms=None if rec.get("timeout_ms") is None else int(rec["timeout_ms"]),
            config_rev=int(rec.get("config_rev") or 0),
        )
        if sig.direction not in ("LONG", "SHORT"):
            raise InvalidSignal(f"direction {sig.direction!r}")
        if not (sig.price > 0 and sig.risk_distance > 0 and sig.atr > 0):
            raise InvalidSignal("price, atr and risk_distance must be positive")
        if abs(sig.sl_r - 1.0) > 1e-9:
            raise InvalidSignal(f"sl_r is {sig.sl_r}; 1R is the stop distance, so sl_r must be 1")
        if not 0 < sig.tp1_r < sig.tp2_r:
            raise InvalidSignal(f"need 0 < tp1_r < tp2_r, got {sig.tp1_r} and {sig.tp2_r}")
        if sig.risk_multiplier is not None and not 0 < sig.risk_multiplier <= 10:
            raise InvalidSignal(f"risk_multiplier {sig.risk_multiplier} outside (0, 10]")
        if sig.timeout_ms is not None and sig.timeout_ms <= 0:
            raise InvalidSignal(f"timeout_ms must be positive, got {sig.timeout_ms}")
        return sig
