"""Bybit `tickers` snapshot + deltas merged into `md.mark` and `md.indicators` (open interest) records.

Bybit's linear ticker topic sends one full snapshot on subscribe, then deltas that carry only the
fields that changed ("if a field is not in the message, its value has not changed"). The merged state
is kept per symbol; a record is published only when one of its own fields changed, so a re-sent
snapshot after a reconnect, or a delta that moves only `lastPrice`, publishes nothing:
- `md.mark` when any of markPrice, indexPrice, fundingRate, nextFundingTime changed (and all four
  are known);
- `md.indicators` kind `open_interest` (value in base units, `extra.open_interest_value` in USD when
  known) when openInterest changed.
The message `ts` is the event time of both. Pure state, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from producers.bybit.parse import EXCHANGE

MARK_FIELDS = ("markPrice", "indexPrice", "fundingRate", "nextFundingTime")


@dataclass
class TickerState:
    symbol: str
    fields: dict[str, float | int] = field(default_factory=dict)
    _mark: tuple | None = None  # last published mark tuple
    _open_interest: float | None = None  # last published open interest

    def on_message(
        self, kind: str, ts: int, changed: dict[str, float | int], receive_time: int
    ) -> tuple[dict | None, dict | None]:
        """Merge one snapshot/delta; returns (md.mark record or None, md.indicators record or None)."""
        if kind == "snapshot":
            self.fields = dict(changed)
        else:
            self.fields.update(changed)
        return self._mark_record(ts, receive_time), self._open_interest_record(ts, receive_time)

    def _mark_record(self, ts: int, receive_time: int) -> dict | None:
        if not all(name in self.fields for name in MARK_FIELDS):
            return None
        mark = tuple(self.fields[name] for name in MARK_FIELDS)
        if mark == self._mark:
            return None
        self._mark = mark
        return {
            "exchange": EXCHANGE,
            "symbol": self.symbol,
            "mark_price": float(mark[0]),
            "index_price": float(mark[1]),
            "funding_rate": float(mark[2]),
            "next_funding_time": int(mark[3]),
            "event_time": ts,
            "receive_time": receive_time,
        }

    def _open_interest_record(self, ts: int, receive_time: int) -> dict | None:
        value = self.fields.get("openInterest")
        if value is None or value == self._open_interest:
            return None
        self._open_interest = float(value)
        extra = {}
        if "openInterestValue" in self.fields:
            extra["open_interest_value"] = float(self.fields["openInterestValue"])
        return {
            "exchange": EXCHANGE,
            "symbol": self.symbol,
            "kind": "open_interest",
            "value": float(value),
            "period": None,
            "extra": extra,
            "event_time": ts,
            "receive_time": receive_time,
        }
