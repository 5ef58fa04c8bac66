"""Deterministic synthetic Bybit v5 linear sessions (the messages a real subscriber would receive).

The market itself (a book that never crosses, trades at the touch, mark/index/funding, liquidations)
is the Binance generator's (:mod:`fake_exchange.synthetic`); this module translates that
session into Bybit's messages, so both fakes describe the same kind of market and the market model
exists once. Given a seed, :func:`generate_bybit_session` returns the same :class:`BybitSession`:

- ``publicTrade.<SYM>``: one message per Binance aggregate trade, one fill per trade of the aggregate
  (its quantity split in whole lots), UUID trade ids, the fills of one message sharing the cross
  sequence ``seq`` as fills of one match do on Bybit; ``S`` = taker side (Binance ``m`` = buyer is
  maker ⇒ ``Sell``);
- ``orderbook.50.<SYM>``: one delta per Binance diff, same levels, ``u`` = previous ``u`` + 1 (size
  "0" deletes); the initial book is served as the snapshot on subscribe. ``restart_at_s`` makes
  Bybit's service restart happen: a ``snapshot`` with ``u`` = 1 (the full book), deltas from 2;
- ``tickers.<SYM>``: deltas carrying only changed fields: mark/index/funding from each Binance mark
  price update, open interest moving now and then, and best bid/ask after each book change (deltas
  that move no field tapeflow publishes);
- ``allLiquidation.<SYM>``: from Binance ``forceOrder``; Bybit's ``S`` is the liquidated position's
  side, so a SELL liquidation order (closing a long) becomes ``S="Buy"``.

All extra randomness comes from one ``random.Random(seed)``; nothing reads the clock.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic import BaseModel, Field

from ..depth_book import _apply
from ..recording import RecordedFrame, Recording
from ..synthetic import QTY_DECIMALS, SyntheticSpec, format_fixed, generate_session

ORDERBOOK_DEPTH = 50


class BybitSyntheticSpec(BaseModel):
    """Parameters of a synthetic Bybit session (validated; usable from config files and the CLI)."""

    seed: int = 0
    symbols: tuple[str, ...] = ("BTCUSDT",)
    duration_s: float = Field(default=20.0, gt=0)
    start_time: float = 1_700_000_000.0
    book_interval_ms: int = Field(default=100, ge=10)
    trades_per_s: float = Field(default=5.0, ge=0)
    mark_interval_s: int = Field(default=1, ge=1)
    liquidations_per_min: float = Field(default=6.0, ge=0)
    book_levels: int = Field(default=20, ge=2, le=ORDERBOOK_DEPTH)
    restart_at_s: float | None = Field(default=None, gt=0)

    def market(self) -> SyntheticSpec:
        """The Binance generator's parameters for the same market."""
        return SyntheticSpec(
            seed=self.seed,
            symbols=self.symbols,
            duration_s=self.duration_s,
            start_time=self.start_time,
            depth_interval_ms=self.book_interval_ms,
            trades_per_s=self.trades_per_s,
            mark_interval_s=self.mark_interval_s,
            liquidations_per_min=self.liquidations_per_min,
            book_levels=self.book_levels,
            book_ticker=False,
        )


@dataclass(frozen=True)
class BybitSession:
    """A replayable Bybit session: the frames plus the exchange state before the first of them."""

    recording: Recording  # frames (``stream`` = Bybit topic) and the initial books (``last_update_id`` = u)
    initial_tickers: dict[str, dict[str, str]]  # full ticker per symbol, Bybit field names and strings
    initial_seq: dict[str, int]  # cross sequence per symbol before the first frame
    start_ms: int

    @property
    def symbols(self) -> tuple[str, ...]:
        return self.recording.symbols

    @property
    def frames(self) -> tuple[RecordedFrame, ...]:
        return self.recording.frames


@dataclass
class _Symbol:
    """What the translation tracks per symbol: Bybit's counters, the book, the last ticker sent."""

    u: int
    seq: int
    open_interest: int  # qty units
    bids: dict[str, str]
    asks: dict[str, str]
    ticker: dict[str, str] = field(default_factory=dict)
    restarted: bool = False


class _Translator:
    def __init__(self, spec: BybitSyntheticSpec) -> None:
        self.spec = spec
        self.rng = random.Random(spec.seed)  # nosec B311 # generated market data, seeded on purpose (not a secret)
        self.market = generate_session(spec.market())
        self.start_ms = int(spec.start_time * 1000)
        self.frames: list[RecordedFrame] = []
        self.state: dict[str, _Symbol] = {}
        for symbol, book in self.market.initial_books.items():
            oi = self.rng.randint(10**6, 10**8)
            self.state[symbol] = _Symbol(
                u=book.last_update_id,
                seq=self.rng.randrange(10**10, 10**11),
                open_interest=oi,
                bids=dict(book.bids),
                asks=dict(book.asks),
            )
            self.state[symbol].ticker = {
                "symbol": symbol,
                "lastPrice": book.bids[0][0],
                **self._touch(symbol),
                **self._open_interest(symbol, float(book.bids[0][0])),
            }

    def emit(self, receive_time: float, topic: str, payload: dict[str, Any]) -> None:
        self.frames.append(
            RecordedFrame(len(self.frames), receive_time, topic, orjson.dumps(payload).decode(), payload, False)
        )

    def _touch(self, symbol: str) -> dict[str, str]:
        st = self.state[symbol]
        bid = max(st.bids, key=float)
        ask = min(st.asks, key=float)
        return {"bid1Price": bid, "bid1Size": st.bids[bid], "ask1Price": ask, "ask1Size": st.asks[ask]}

    def _open_interest(self, symbol: str, price: float) -> dict[str, str]:
        units = self.state[symbol].open_interest
        return {
            "openInterest": format_fixed(units, QTY_DECIMALS),
            "openInterestValue": f"{units * price / 10**QTY_DECIMALS:.2f}",
        }

    def _ticker_delta(self, receive_time: float, symbol: str, ts: int, fields: dict[str, str]) -> None:
        st = self.state[symbol]
        changed = {k: v for k, v in fields.items() if st.ticker.get(k) != v}
        if not changed:
            return
        st.ticker.update(changed)
        st.seq += 1
        self.emit(
            receive_time,
            f"tickers.{symbol}",
            {
                "topic": f"tickers.{symbol}",
                "type": "delta",
                "ts": ts,
                "cs": st.seq,
                "data": {"symbol": symbol, **changed},
            },
        )

    # -- one translation per Binance event -------------------------------------------------------
    def trade(self, receive_time: float, d: dict[str, Any]) -> None:
        symbol, st = d["s"], self.state[d["s"]]
        units = round(float(d["q"]) * 10**QTY_DECIMALS)
        n = max(1, min(d["l"] - d["f"] + 1, units))
        sizes = [units // n + (1 if k < units % n else 0) for k in range(n)]
        st.seq += self.rng.randint(1, 5)
        fills = [
            {
                "T": d["T"],
                "s": symbol,
                "S": "Sell" if d["m"] else "Buy",
                "v": format_fixed(size, QTY_DECIMALS),
                "p": d["p"],
                "L": "ZeroPlusTick",
                "i": str(uuid.UUID(int=self.rng.getrandbits(128), version=4)),
                "BT": False,
                "seq": st.seq,
            }
            for size in sizes
        ]
        self.emit(
            receive_time,
            f"publicTrade.{symbol}",
            {"topic": f"publicTrade.{symbol}", "type": "snapshot", "ts": d["E"], "data": fills},
        )
        self._ticker_delta(receive_time, symbol, d["E"], {"lastPrice": d["p"]})

    def book(self, receive_time: float, d: dict[str, Any]) -> None:
        symbol, st = d["s"], self.state[d["s"]]
        _apply(st.bids, tuple((p, q) for p, q in d["b"]))
        _apply(st.asks, tuple((p, q) for p, q in d["a"]))
        st.seq += self.rng.randint(1, 20)
        topic = f"orderbook.{ORDERBOOK_DEPTH}.{symbol}"
        restart = self.spec.restart_at_s
        if restart is not None and not st.restarted and d["E"] >= self.start_ms + restart * 1000:
            st.restarted, st.u, kind = True, 1, "snapshot"
            bids = [[p, st.bids[p]] for p in sorted(st.bids, key=float, reverse=True)]
            asks = [[p, st.asks[p]] for p in sorted(st.asks, key=float)]
        else:
            st.u, kind, bids, asks = st.u + 1, "delta", d["b"], d["a"]
        self.emit(
            receive_time,
            topic,
            {
                "topic": topic,
                "type": kind,
                "ts": d["E"],
                "cts": d["T"],
                "data": {"s": symbol, "b": bids, "a": asks, "u": st.u, "seq": st.seq},
            },
        )
        self._ticker_delta(receive_time + 1e-6, symbol, d["E"], self._touch(symbol))

    def mark(self, receive_time: float, d: dict[str, Any]) -> None:
        symbol, st = d["s"], self.state[d["s"]]
        fields = {"markPrice": d["p"], "indexPrice": d["i"], "fundingRate": d["r"], "nextFundingTime": str(d["T"])}
        if self.rng.random() < 0.5:
            st.open_interest += self.rng.randint(-5000, 5000)
            fields |= self._open_interest(symbol, float(d["p"]))
        if not st.ticker.get("markPrice"):  # the first mark update completes the initial ticker
            st.ticker |= fields
            return
        self._ticker_delta(receive_time, symbol, d["E"], fields)

    def liquidation(self, receive_time: float, d: dict[str, Any]) -> None:
        o = d["o"]
        topic = f"allLiquidation.{o['s']}"
        self.emit(
            receive_time,
            topic,
            {
                "topic": topic,
                "type": "snapshot",
                "ts": d["E"],
                "data": [
                    {"T": o["T"], "s": o["s"], "S": "Buy" if o["S"] == "SELL" else "Sell", "v": o["z"], "p": o["ap"]}
                ],
            },
        )

    def run(self) -> BybitSession:
        handlers = {
            "aggTrade": self.trade,
            "depthUpdate": self.book,
            "markPriceUpdate": self.mark,
            "forceOrder": self.liquidation,
        }
        first_marks = {}
        for frame in self.market.frames:
            if frame.event == "markPriceUpdate":
                first_marks.setdefault(frame.payload["s"], frame.index)
        # the initial ticker takes its mark fields from each symbol's first mark update
        for index in first_marks.values():
            self.mark(0.0, self.market.frames[index].payload)
        initial_tickers = {s: dict(st.ticker) for s, st in self.state.items()}
        initial_seq = {s: st.seq for s, st in self.state.items()}
        initial_books = dict(self.market.initial_books)
        for frame in self.market.frames:
            if frame.index not in first_marks.values() and frame.event in handlers:
                handlers[frame.event](frame.receive_time, frame.payload)
        recording = Recording(
            frames=tuple(self.frames),
            rest={},
            symbols=self.market.symbols,
            initial_books=initial_books,
            configuration={"synthetic": self.spec.model_dump(mode="json")},
            source=f"bybit-synthetic(seed={self.spec.seed})",
        )
        return BybitSession(recording, initial_tickers, initial_seq, self.start_ms)


def generate_bybit_session(spec: BybitSyntheticSpec | None = None, **overrides: Any) -> BybitSession:
    """Deterministic synthetic Bybit session; ``generate_bybit_session(seed=3, duration_s=60)`` also works."""
    spec = spec or BybitSyntheticSpec()
    if overrides:
        spec = BybitSyntheticSpec.model_validate({**spec.model_dump(), **overrides})
    return _Translator(spec).run()
