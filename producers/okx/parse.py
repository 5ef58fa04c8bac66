"""OKX v5 public frames (USDT perpetual swaps) to tapeflow's normalised records (`schemas/avro/*.avsc`).

Pure functions, one per channel, as `producers.bybit.parse` does for Bybit: OKX's vocabulary (`px`,
`sz`, `seqId`, `markPx`, ...) stops here. A frame not of the documented shape raises the shared
`FrameError` with the reason, so the producer dead-letters it and keeps going.

Decisions where the mapping is not one-to-one:
- Symbols: records carry tapeflow's symbol (`BTCUSDT`), never OKX's instrument id (`BTC-USDT-SWAP`):
  `schemas.symbols` maps them, so one coin has one `symbol` on every venue. A symbol quoted per 1,000
  coins elsewhere (`1000PEPEUSDT`) is OKX's one-coin swap (`PEPE-USDT-SWAP`) published in the symbol's
  units: prices × `multiplier`, quantities ÷ `multiplier` (exact, in decimal).
- Sizes: a swap's `sz` (trades and book levels) counts *contracts*; `md.trades` and the books hold base
  coin like every other venue, so each size is multiplied by the instrument's `ctVal` (base coin per
  contract, from `GET /api/v5/public/instruments?instType=SWAP`) in decimal, then made a float once:
  "3" contracts of 0.01 BTC is 0.03 BTC, not 0.030000000000000002.
- trades: `side` is the taker's side → `taker_side`. One push row aggregates `count` fills of one taker
  order at one price; `tradeId` is the *last* fill's id, so the row covers OKX trade ids
  `tradeId - count + 1 .. tradeId` (`first_trade_id`, `last_trade_id`). OKX trade ids are consecutive
  per instrument, so a hole between rows is visible; `trade_numbering` turns rows into tapeflow's
  consecutive `agg_id`. `ts` is the fill time, the only time a row has: event time = trade time.
- books (400 levels, incremental): a `DepthDiff` with `first_update_id = final_update_id = seqId`
  and `prev_final_update_id = prevSeqId`; a snapshot (`prevSeqId` -1) chains to nothing (None). The
  chaining rules (heartbeats, sequence resets, a REST snapshot in the middle) are `book_sync`'s.
  OKX's `checksum` is deprecated (always 0) and not read.
- mark price, index price and funding arrive on three channels (`mark-price`, `index-tickers`,
  `funding-rate`); `mark_state` merges them into `md.mark`. `fundingTime` is the *next* settlement
  (→ `next_funding_time`); `nextFundingTime` the one after, so their difference is the funding
  interval, which goes with the rate into `md.indicators` (kind `funding_rate`).
- spot: the spot pair's `tickers` (same id as the index, `BTC-USDT`) gives the touch; its mid against
  the swap's mark is `md.indicators` kind `spot_perp_divergence` (as Binance's poller publishes it),
  at most once per `spot_interval_ms` of event time (`mark_state`).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, DecimalException
from typing import Any

from producers.base.book import DepthDiff, DepthSnapshot, diff_record
from producers.base.frames import FrameError, finite_number, normalising
from schemas.symbols import symbol_from_okx

EXCHANGE = "okx"
TAKER_SIDES = {"buy": "BUY", "sell": "SELL"}

__all__ = [
    "EXCHANGE",
    "FrameError",
    "FundingPoint",
    "Instrument",
    "TradePrint",
    "channel_of",
    "okx_depth_record",
    "parse_books",
    "parse_funding_rate",
    "parse_history_trades",
    "parse_index_tickers",
    "parse_instruments",
    "parse_mark_price",
    "parse_rest_books",
    "parse_spot_tickers",
    "parse_trades",
]


def _millis(raw: Any, field: str) -> int:
    """An Unix-ms timestamp, which OKX sends as a decimal string ("1597026383085")."""
    if isinstance(raw, bool) or not isinstance(raw, (str, int)):
        raise FrameError(f"{field}={raw!r} is not an Unix-ms timestamp")
    text = str(raw)
    if not text.isascii() or not text.isdigit():
        raise FrameError(f"{field}={raw!r} is not an Unix-ms timestamp")
    return int(text)


def _integer(raw: Any, field: str) -> int:
    """An integer OKX sends as a number or a decimal string (`tradeId`, `seqId`, `count`)."""
    if isinstance(raw, bool):
        raise FrameError(f"{field}={raw!r} is not an integer")
    if isinstance(raw, int):
        return raw
    if (
        isinstance(raw, str)
        and raw.isascii()
        and raw.lstrip("-").isdigit()
        and raw.count("-") <= 1
        and raw[-1:].isdigit()
    ):
        return int(raw)
    raise FrameError(f"{field}={raw!r} is not an integer")


def _decimal(raw: Any, field: str) -> Decimal:
    """An exact decimal from an OKX number string; finite, or a FrameError naming `field`."""
    if isinstance(raw, bool) or not isinstance(raw, (str, int, float)):
        raise FrameError(f"{field}={raw!r} is not a number")
    try:
        value = (
            Decimal(str(raw).strip()) if isinstance(raw, str) else Decimal(repr(raw) if isinstance(raw, float) else raw)
        )
    except DecimalException:
        raise FrameError(f"{field}={raw!r} is not a number") from None
    if not value.is_finite():
        raise FrameError(f"{field}={raw!r} is not finite")
    return value


def _base_qty(sz: Any, ct_val: Decimal, field: str) -> float:
    """Contracts `sz` in base coin: sz × ctVal, exact, then one float."""
    qty = float(_decimal(sz, field) * ct_val)
    return finite_number(qty, field)


def _price(raw: Any, field: str, multiplier: int = 1) -> float:
    """A price in the symbol's units: OKX's per-coin price × `multiplier`, exact, then one float."""
    return finite_number(float(_decimal(raw, field) * multiplier), field)


@dataclass(frozen=True, slots=True)
class Instrument:
    """One OKX linear swap as tapeflow uses it."""

    inst_id: str  # BTC-USDT-SWAP
    symbol: str  # BTCUSDT
    ct_val: Decimal  # base coin per contract (ctVal; ctValCcy is the base coin)
    multiplier: int = 1  # coins per unit of `symbol` (1000 for 1000PEPEUSDT on PEPE-USDT-SWAP)

    @property
    def qty_per_contract(self) -> Decimal:
        """Units of `symbol` per contract: ctVal ÷ multiplier."""
        return self.ct_val / self.multiplier


@normalising("instruments")
def parse_instruments(body: Any) -> dict[str, Instrument]:
    """`GET /api/v5/public/instruments?instType=SWAP` → {inst_id: Instrument} of its linear swaps.

    Only linear contracts whose face value is in the base coin convert contracts to base coin by
    `ctVal` alone (`ctMult` is 1 on OKX swaps and multiplies in when it is not); inverse swaps
    (`BTC-USD-SWAP`, ctVal in USD) and instruments tapeflow cannot name are left out.
    """
    if not isinstance(body, dict) or str(body.get("code")) != "0" or not isinstance(body.get("data"), list):
        raise FrameError(
            f"instruments: not a successful OKX answer (code={body.get('code') if isinstance(body, dict) else None!r})"
        )
    out = {}
    for row in body["data"]:
        if not isinstance(row, dict) or row.get("instType") != "SWAP" or row.get("ctType") != "linear":
            continue
        inst_id = row["instId"]
        try:
            symbol = symbol_from_okx(inst_id)
        except ValueError:
            continue
        if row.get("ctValCcy") not in ("", None, inst_id.split("-")[0]):
            continue
        ct_val = _decimal(row["ctVal"], "ctVal")
        mult = row.get("ctMult")
        if mult not in (None, ""):
            ct_val *= _decimal(mult, "ctMult")
        if ct_val <= 0:
            raise FrameError(f"instruments: {inst_id} ctVal={row['ctVal']!r} is not positive")
        out[inst_id] = Instrument(inst_id, symbol, ct_val)
    return out


def channel_of(msg: Any) -> tuple[str, str]:
    """(`channel`, `instId`) of a push message's `arg`."""
    arg = msg.get("arg") if isinstance(msg, dict) else None
    if not isinstance(arg, dict):
        raise FrameError("push without an arg object")
    channel, inst_id = arg.get("channel"), arg.get("instId")
    if not isinstance(channel, str) or not channel or not isinstance(inst_id, str) or not inst_id:
        raise FrameError(f"push arg without channel/instId: {arg!r}"[:300])
    return channel, inst_id


def _rows(msg: Any, channel: str) -> list:
    if not isinstance(msg, dict) or not isinstance(msg.get("arg"), dict) or msg["arg"].get("channel") != channel:
        raise FrameError(f"expected a {channel} push")
    data = msg.get("data")
    if not isinstance(data, list) or not data or not all(isinstance(row, dict) for row in data):
        raise FrameError(f"{channel}: data is not a non-empty list of objects")
    return data


def _check_inst(row: dict, instrument: Instrument, channel: str) -> None:
    if row.get("instId", instrument.inst_id) != instrument.inst_id:
        raise FrameError(f"{channel}: row for {row.get('instId')!r} in the {instrument.inst_id} push")


@dataclass(frozen=True, slots=True)
class TradePrint:
    """One trades-channel row before tapeflow numbering; `record(agg_id)` is its `md.trades` value."""

    symbol: str
    trade_id: int  # OKX `tradeId`: the last fill of the aggregation
    count: int  # fills aggregated (`count`)
    price: float
    qty: float  # base coin
    taker_side: str  # BUY | SELL
    trade_time: int  # `ts`
    receive_time: int

    @property
    def first_trade_id(self) -> int:
        return self.trade_id - self.count + 1

    def record(self, agg_id: int) -> dict:
        return {
            "exchange": EXCHANGE,
            "symbol": self.symbol,
            "agg_id": agg_id,
            "price": self.price,
            "qty": self.qty,
            "first_trade_id": self.first_trade_id,
            "last_trade_id": self.trade_id,
            "event_time": self.trade_time,
            "trade_time": self.trade_time,
            "receive_time": self.receive_time,
            "taker_side": self.taker_side,
        }


@normalising("trades")
def parse_trades(msg: Any, instrument: Instrument, receive_time: int) -> list[TradePrint]:
    """A `trades` push: one print per row, in push order, sizes in base coin."""
    out = []
    for row in _rows(msg, "trades"):
        _check_inst(row, instrument, "trades")
        side = TAKER_SIDES.get(row["side"]) if isinstance(row["side"], str) else None
        if side is None:
            raise FrameError(f"trades: unknown taker side {row['side']!r}")
        trade_id = _integer(row["tradeId"], "tradeId")
        count = _integer(row.get("count", "1"), "count")
        if trade_id < 0 or count < 1 or count > trade_id + 1:
            raise FrameError(f"trades: tradeId={trade_id} with count={count} is not a trade id range")
        out.append(
            TradePrint(
                symbol=instrument.symbol,
                trade_id=trade_id,
                count=count,
                price=_price(row["px"], "px", instrument.multiplier),
                qty=_base_qty(row["sz"], instrument.qty_per_contract, "sz"),
                taker_side=side,
                trade_time=_millis(row["ts"], "ts"),
                receive_time=receive_time,
            )
        )
    return out


@normalising("history-trades")
def parse_history_trades(body: Any, instrument: Instrument, receive_time: int) -> list[TradePrint]:
    """`GET /api/v5/market/history-trades` → one print per fill (`count` 1), oldest first (OKX: newest first)."""
    if not isinstance(body, dict) or str(body.get("code")) != "0" or not isinstance(body.get("data"), list):
        raise FrameError("history-trades: not a successful OKX answer")
    out = []
    for row in body["data"]:
        if not isinstance(row, dict):
            raise FrameError(f"history-trades: row {row!r} is not an object"[:300])
        _check_inst(row, instrument, "history-trades")
        side = TAKER_SIDES.get(row["side"]) if isinstance(row["side"], str) else None
        if side is None:
            raise FrameError(f"history-trades: unknown taker side {row['side']!r}")
        out.append(
            TradePrint(
                symbol=instrument.symbol,
                trade_id=_integer(row["tradeId"], "tradeId"),
                count=1,
                price=_price(row["px"], "px", instrument.multiplier),
                qty=_base_qty(row["sz"], instrument.qty_per_contract, "sz"),
                taker_side=side,
                trade_time=_millis(row["ts"], "ts"),
                receive_time=receive_time,
            )
        )
    return sorted(out, key=lambda p: p.trade_id)


def _levels(raw: Any, instrument: Instrument, side: str) -> tuple[tuple[float, float], ...]:
    """[[px, sz(contracts), "0", orders], ...] → ((price, base qty), ...) in the symbol's units."""
    if not isinstance(raw, list):
        raise FrameError(f"books: {side} is not a list")
    out = []
    for level in raw:
        if not isinstance(level, list) or len(level) < 2:
            raise FrameError(f"books: {side} level {level!r} is not [px, sz, ...]"[:300])
        price = _price(level[0], "px", instrument.multiplier)
        if price <= 0:
            raise FrameError(f"books: {side} price {level[0]!r} is not positive")
        qty = _base_qty(level[1], instrument.qty_per_contract, "sz")
        if qty < 0:
            raise FrameError(f"books: {side} size {level[1]!r} is negative")
        out.append((price, qty))
    return tuple(out)


@normalising("books")
def parse_books(msg: Any, instrument: Instrument, receive_time: int) -> DepthDiff:
    """A `books` push (snapshot or update) as a `DepthDiff` (see the module docstring)."""
    (row,) = _rows(msg, "books")
    action = msg.get("action")
    if action not in ("snapshot", "update"):
        raise FrameError(f"books: unknown action {action!r}")
    seq, prev = _integer(row["seqId"], "seqId"), _integer(row["prevSeqId"], "prevSeqId")
    if seq < 0 or (action == "update" and prev < 0):
        raise FrameError(f"books: seqId={seq} prevSeqId={prev} for an {action}")
    ts = _millis(row["ts"], "ts")
    return DepthDiff(
        symbol=instrument.symbol,
        first_update_id=seq,
        final_update_id=seq,
        prev_final_update_id=None if action == "snapshot" else prev,  # type: ignore[arg-type]
        event_time=ts,
        transaction_time=ts,
        receive_time=receive_time,
        bids=_levels(row["bids"], instrument, "bids"),
        asks=_levels(row["asks"], instrument, "asks"),
    )


@normalising("rest books")
def parse_rest_books(body: Any, instrument: Instrument, receive_time: int) -> DepthSnapshot:
    """`GET /api/v5/market/books?instId=&sz=` → a snapshot at `seqId` (sizes in base coin)."""
    if not isinstance(body, dict) or str(body.get("code")) != "0" or not isinstance(body.get("data"), list):
        raise FrameError("rest books: not a successful OKX answer")
    (row,) = body["data"]
    ts = _millis(row["ts"], "ts")
    return DepthSnapshot(
        symbol=instrument.symbol,
        last_update_id=_integer(row["seqId"], "seqId"),
        bids=_levels(row["bids"], instrument, "bids"),
        asks=_levels(row["asks"], instrument, "asks"),
        event_time=ts,
        receive_time=receive_time,
    )


def okx_depth_record(diff: DepthDiff) -> dict:
    """`md.depth` record of a verified OKX update (a full book has `prev_final_update_id` None)."""
    return diff_record(EXCHANGE, diff)


def _price_rows(msg: Any, channel: str, field: str, multiplier: int) -> list[tuple[str, float, int]]:
    out = []
    for row in _rows(msg, channel):
        inst_id = row["instId"]
        if not isinstance(inst_id, str):
            raise FrameError(f"{channel}: instId={inst_id!r}")
        out.append((inst_id, _price(row[field], field, multiplier), _millis(row["ts"], "ts")))
    return out


@normalising("mark-price")
def parse_mark_price(msg: Any, multiplier: int = 1) -> list[tuple[str, float, int]]:
    """A `mark-price` push: (instId, mark price × multiplier, ts) per row."""
    return _price_rows(msg, "mark-price", "markPx", multiplier)


@normalising("index-tickers")
def parse_index_tickers(msg: Any, multiplier: int = 1) -> list[tuple[str, float, int]]:
    """An `index-tickers` push: (index instId such as BTC-USDT, index price × multiplier, ts) per row."""
    return _price_rows(msg, "index-tickers", "idxPx", multiplier)


@normalising("tickers")
def parse_spot_tickers(msg: Any, multiplier: int = 1) -> list[tuple[str, float, float, int]]:
    """A `tickers` push of the spot pair (`BTC-USDT`): (instId, best bid, best ask, ts) per row that has
    both sides ("" when a side is empty: that row is left out), prices × multiplier."""
    out = []
    for row in _rows(msg, "tickers"):
        inst_id = row["instId"]
        if not isinstance(inst_id, str):
            raise FrameError(f"tickers: instId={inst_id!r}")
        if row.get("bidPx") in ("", None) or row.get("askPx") in ("", None):
            continue
        out.append(
            (
                inst_id,
                _price(row["bidPx"], "bidPx", multiplier),
                _price(row["askPx"], "askPx", multiplier),
                _millis(row["ts"], "ts"),
            )
        )
    return out


@dataclass(frozen=True, slots=True)
class FundingPoint:
    """One funding-rate row: the current rate and the settlements it refers to."""

    inst_id: str
    rate: float  # fundingRate, a fraction per interval
    funding_time: int  # fundingTime: the next settlement, Unix ms
    next_funding_time: int | None  # nextFundingTime: the settlement after it ("" when OKX has none)
    premium: float | None
    ts: int

    def indicator(self, symbol: str, receive_time: int) -> dict:
        """`md.indicators` kind `funding_rate`: the rate, the next settlement and the interval."""
        extra = {"next_funding_time": float(self.funding_time)}
        if self.next_funding_time is not None:
            extra["following_funding_time"] = float(self.next_funding_time)
            extra["funding_interval_ms"] = float(self.next_funding_time - self.funding_time)
        if self.premium is not None:
            extra["premium"] = self.premium
        return {
            "exchange": EXCHANGE,
            "symbol": symbol,
            "kind": "funding_rate",
            "value": self.rate,
            "period": None,
            "extra": extra,
            "event_time": self.ts,
            "receive_time": receive_time,
        }


@normalising("funding-rate")
def parse_funding_rate(msg: Any) -> list[FundingPoint]:
    """A `funding-rate` push: one `FundingPoint` per row."""
    out = []
    for row in _rows(msg, "funding-rate"):
        inst_id = row["instId"]
        if not isinstance(inst_id, str):
            raise FrameError(f"funding-rate: instId={inst_id!r}")
        following = row.get("nextFundingTime")
        premium = row.get("premium")
        out.append(
            FundingPoint(
                inst_id=inst_id,
                rate=finite_number(float(_decimal(row["fundingRate"], "fundingRate")), "fundingRate"),
                funding_time=_millis(row["fundingTime"], "fundingTime"),
                next_funding_time=None if following in (None, "") else _millis(following, "nextFundingTime"),
                premium=None
                if premium in (None, "")
                else finite_number(float(_decimal(premium, "premium")), "premium"),
                ts=_millis(row["ts"], "ts"),
            )
        )
    return out
