"""The inputs of the cross-venue state, and adapters from the Avro records of ``md.book``, ``md.mark``
and ``md.indicators`` (schemas/avro), so the Faust app and the backtest feed it the same way.

Times (``time_ms``) are event times and order the inputs: a book's ``event_time`` (the last diff
applied), a mark record's ``event_time``; a polled spot price's *receive* time, as the engine core
does for every polled indicator (the value became known then; its own timestamp may be minutes
older, and using it would let a replay see the price earlier than the live system did).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from stream_apps.cross_venue.sweep import level_pairs


@dataclass(frozen=True, slots=True)
class BookEvent:
    """A sampled book of one venue symbol: ``(price, qty)`` levels, bids highest first, asks lowest
    first, quantities in base units as the md.book schema says (prices as the venue quotes them)."""

    exchange: str
    symbol: str
    time_ms: int
    bids: tuple[tuple[float, float], ...]
    asks: tuple[tuple[float, float], ...]


@dataclass(frozen=True, slots=True)
class FundingEvent:
    """The current funding of one perpetual: rate per interval (0.0001 = 0.01 %) and next settlement.

    ``interval_ms`` when the venue says it (OKX sends the current and the next funding time, Bybit's
    instrument info has ``fundingInterval``); otherwise the state learns it from the next funding time
    moving on (see ``state``), never assumes 8 h."""

    exchange: str
    symbol: str
    time_ms: int
    funding_rate: float
    next_funding_time_ms: int
    interval_ms: int | None = None


@dataclass(frozen=True, slots=True)
class SpotEvent:
    """The spot price of the coin a venue's perpetual trades (the venue's own spot market)."""

    exchange: str
    symbol: str  # the perpetual's symbol: the leg this spot price belongs to
    time_ms: int
    price: float


CrossVenueEvent = BookEvent | FundingEvent | SpotEvent


def book_event_from_record(record: Mapping[str, Any]) -> BookEvent:
    """An ``md.book`` record (book_snapshot.avsc)."""
    return BookEvent(
        record["exchange"],
        record["symbol"],
        int(record["event_time"]),
        tuple(level_pairs(record["bids"])),
        tuple(level_pairs(record["asks"])),
    )


def funding_event_from_record(record: Mapping[str, Any]) -> FundingEvent:
    """An ``md.mark`` record (mark_price.avsc): it has no funding interval field."""
    return FundingEvent(
        record["exchange"],
        record["symbol"],
        int(record["event_time"]),
        float(record["funding_rate"]),
        int(record["next_funding_time"]),
    )


def spot_event_from_record(record: Mapping[str, Any]) -> SpotEvent | None:
    """The spot price in an ``md.indicators`` record of kind ``spot_perp_divergence`` (its
    ``extra["spot_price"]``, published by the Binance poller); None for any other record."""
    extra = record.get("extra") or {}
    if record.get("kind") != "spot_perp_divergence" or "spot_price" not in extra:
        return None
    return SpotEvent(record["exchange"], record["symbol"], int(record["receive_time"]), float(extra["spot_price"]))


def funding_event_from_indicator(record: Mapping[str, Any]) -> FundingEvent | None:
    """An ``md.indicators`` record of kind ``funding_rate`` with ``extra["next_funding_time"]`` (OKX's
    funding-rate channel, Binance's premiumIndex poll); OKX's also has ``funding_interval_ms``, the
    only place a venue states its interval today. Timed by its receive time like every indicator."""
    extra = record.get("extra") or {}
    if record.get("kind") != "funding_rate" or "next_funding_time" not in extra:
        return None
    interval = extra.get("funding_interval_ms")
    return FundingEvent(
        record["exchange"],
        record["symbol"],
        int(record["receive_time"]),
        float(record["value"]),
        int(extra["next_funding_time"]),
        int(interval) if interval else None,
    )


def event_from_record(topic: str, record: Mapping[str, Any]) -> CrossVenueEvent | None:
    """The input in a record of ``md.book``, ``md.mark`` or ``md.indicators``; None for anything else
    (another topic, an indicator that is neither a spot price nor a funding rate)."""
    if topic == "md.book":
        return book_event_from_record(record)
    if topic == "md.mark":
        return funding_event_from_record(record)
    if topic == "md.indicators":
        return spot_event_from_record(record) or funding_event_from_indicator(record)
    return None
