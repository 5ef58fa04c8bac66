"""Deterministic synthetic OKX v5 sessions of USDT perpetual swaps (the pushes a real subscriber receives).

The market itself (a book that never crosses, trades at the touch, mark/index/funding) is the Binance
generator's (:mod:`fake_exchange.synthetic`); this module translates it into OKX's pushes, so every fake
describes the same kind of market and the market model exists once (as :mod:`fake_exchange.bybit.synthetic`
does). Sizes become *contracts* of ``ct_val`` base coin each (``BTCUSDT`` → ``BTC-USDT-SWAP``, 0.01 BTC),
as OKX sends them. Given a seed, :func:`generate_okx_session` returns the same :class:`OkxSession`:

- ``trades:<INST>``: one push per Binance aggregate trade, one row aggregating its ``count`` = l - f + 1
  fills (fewer when the size has fewer lots); ``tradeId`` is the last fill's id of a per-instrument
  counter that advances by ``count`` (OKX's ids are consecutive per instrument); ``side`` = taker side
  (Binance ``m`` ⇒ ``sell``). The individual fills (the size split in lots) are the session's ``fills``,
  which the fake's ``history-trades`` serves;
- ``books:<INST>``: one ``update`` per Binance diff, same levels in contracts, ``prevSeqId`` = the
  previous ``seqId``, ``seqId`` advancing by a random step (OKX's do); now and then a heartbeat (empty
  sides, ``prevSeqId`` = ``seqId``); ``reset_at_s`` makes the sequence restart lower, as after OKX
  maintenance. The initial book is served as the ``snapshot`` on subscribe;
- ``mark-price:<INST>`` from each mark update, with ``tickers:<BASE-QUOTE>`` of the spot pair (its touch
  the index ± 0.05), ``index-tickers:<BASE-QUOTE>`` when the index moved,
  ``funding-rate:<INST>`` when the rate moved or every 30 s (``fundingTime`` = Binance's next funding
  time, ``nextFundingTime`` 8 h later).

Frame ``stream`` names are ``channel:instId``. All extra randomness comes from one ``random.Random(seed)``;
nothing reads the clock.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson
from pydantic import BaseModel, Field

from schemas.symbols import okx_index_id, okx_swap_inst_id

from ..depth_book import _apply
from ..recording import RecordedFrame, Recording
from ..synthetic import FUNDING_INTERVAL_MS, SyntheticSpec, generate_session

CT_VALS = {"BTCUSDT": "0.01", "ETHUSDT": "0.1"}  # OKX's contract values; other symbols get DEFAULT_CT_VAL
DEFAULT_CT_VAL = "1"
FUNDING_PUSH_MS = 30_000
SPOT_HALF_SPREAD = Decimal("0.05")  # the spot touch: the index ± this
FILL_LOT = Decimal("0.001")  # contracts: the smallest fill the generator splits an aggregate into


def ct_val_of(symbol: str) -> Decimal:
    return Decimal(CT_VALS.get(symbol, DEFAULT_CT_VAL))


def contracts(qty: str, ct_val: Decimal) -> str:
    """A base-coin quantity string in contracts, exact (``"0.030"`` BTC at 0.01 → ``"3"``)."""
    value = Decimal(qty) / ct_val
    text = format(value.normalize(), "f")
    return "0" if value == 0 else text


class OkxSyntheticSpec(BaseModel):
    """Parameters of a synthetic OKX session (validated; usable from config files and the CLI)."""

    seed: int = 0
    symbols: tuple[str, ...] = ("BTCUSDT",)
    duration_s: float = Field(default=20.0, gt=0)
    start_time: float = 1_700_000_000.0
    book_interval_ms: int = Field(default=100, ge=10)
    trades_per_s: float = Field(default=5.0, ge=0)
    mark_interval_s: int = Field(default=1, ge=1)
    book_levels: int = Field(default=20, ge=2, le=400)
    heartbeat_probability: float = Field(default=0.02, ge=0, le=1)
    reset_at_s: float | None = Field(default=None, gt=0)

    def market(self) -> SyntheticSpec:
        return SyntheticSpec(
            seed=self.seed,
            symbols=self.symbols,
            duration_s=self.duration_s,
            start_time=self.start_time,
            depth_interval_ms=self.book_interval_ms,
            trades_per_s=self.trades_per_s,
            mark_interval_s=self.mark_interval_s,
            liquidations_per_min=0.0,
            book_levels=self.book_levels,
            book_ticker=False,
        )


@dataclass
class OkxSymbolState:
    """The exchange's per-instrument state: what a subscription's first push or a REST GET shows."""

    symbol: str
    inst_id: str
    index_id: str
    ct_val: Decimal
    seq_id: int
    trade_id: int
    bids: dict[str, str]  # price -> contracts
    asks: dict[str, str]
    ts: int
    mark: dict[str, str] = field(default_factory=dict)  # markPx, ts
    index: dict[str, str] = field(default_factory=dict)  # idxPx, ts
    funding: dict[str, str] = field(default_factory=dict)  # funding-rate row
    spot: dict[str, str] = field(default_factory=dict)  # the spot pair's ticker (bidPx, askPx, last, ts)


@dataclass(frozen=True)
class OkxSession:
    """A replayable OKX session: the frames plus the exchange state before the first of them."""

    recording: Recording  # frames (``stream`` = channel:instId); initial_books in base coin, for reference
    initial: dict[str, OkxSymbolState]  # per tapeflow symbol
    start_ms: int
    fills: dict[str, tuple[dict[str, str], ...]] = field(default_factory=dict)  # inst_id -> every fill, oldest first

    @property
    def symbols(self) -> tuple[str, ...]:
        return self.recording.symbols

    @property
    def frames(self) -> tuple[RecordedFrame, ...]:
        return self.recording.frames


def _copy(st: OkxSymbolState) -> OkxSymbolState:
    return OkxSymbolState(
        st.symbol,
        st.inst_id,
        st.index_id,
        st.ct_val,
        st.seq_id,
        st.trade_id,
        dict(st.bids),
        dict(st.asks),
        st.ts,
        mark=dict(st.mark),
        index=dict(st.index),
        funding=dict(st.funding),
        spot=dict(st.spot),
    )


class _Translator:
    def __init__(self, spec: OkxSyntheticSpec) -> None:
        self.spec = spec
        self.rng = random.Random(spec.seed)  # nosec B311 # generated market data, seeded on purpose
        self.market = generate_session(spec.market())
        self.start_ms = int(spec.start_time * 1000)
        self.frames: list[RecordedFrame] = []
        self.state: dict[str, OkxSymbolState] = {}
        self.reset_done: set[str] = set()
        self.fills: dict[str, list[dict[str, str]]] = {}
        for symbol, book in self.market.initial_books.items():
            ct = ct_val_of(symbol)
            self.state[symbol] = OkxSymbolState(
                symbol,
                okx_swap_inst_id(symbol),
                okx_index_id(symbol),
                ct,
                seq_id=self.rng.randrange(10**9, 10**10),
                trade_id=self.rng.randrange(10**8, 10**9),
                bids={p: contracts(q, ct) for p, q in book.bids},
                asks={p: contracts(q, ct) for p, q in book.asks},
                ts=self.start_ms,
            )

    def emit(self, receive_time: float, stream: str, payload: dict[str, Any]) -> None:
        self.frames.append(
            RecordedFrame(len(self.frames), receive_time, stream, orjson.dumps(payload).decode(), payload, False)
        )

    def push(self, receive_time: float, channel: str, inst_id: str, rows: list[dict], **extra: Any) -> None:
        self.emit(
            receive_time,
            f"{channel}:{inst_id}",
            {"arg": {"channel": channel, "instId": inst_id}, **extra, "data": rows},
        )

    def trade(self, receive_time: float, d: dict[str, Any]) -> None:
        st = self.state[d["s"]]
        size = contracts(d["q"], st.ct_val)
        units = int(Decimal(size) / FILL_LOT)
        count = max(1, min(d["l"] - d["f"] + 1, units))  # the aggregate's fills, each at least one lot
        side = "sell" if d["m"] else "buy"
        for k in range(count):  # the individual fills, as GET /api/v5/market/history-trades lists them
            lots = units // count + (1 if k < units % count else 0)
            self.fills.setdefault(st.inst_id, []).append(
                {
                    "instId": st.inst_id,
                    "side": side,
                    "sz": format((lots * FILL_LOT).normalize(), "f"),
                    "px": d["p"],
                    "source": "0",
                    "tradeId": str(st.trade_id + 1 + k),
                    "ts": str(d["T"]),
                }
            )
        st.trade_id += count
        self.push(
            receive_time,
            "trades",
            st.inst_id,
            [
                {
                    "instId": st.inst_id,
                    "tradeId": str(st.trade_id),
                    "px": d["p"],
                    "sz": size,
                    "side": side,
                    "ts": str(d["T"]),
                    "count": str(count),
                    "source": "0",
                    "seqId": st.seq_id,
                }
            ],
        )

    def book(self, receive_time: float, d: dict[str, Any]) -> None:
        st = self.state[d["s"]]
        bids = [[p, contracts(q, st.ct_val), "0", "1" if float(q) else "0"] for p, q in d["b"]]
        asks = [[p, contracts(q, st.ct_val), "0", "1" if float(q) else "0"] for p, q in d["a"]]
        _apply(st.bids, tuple((lvl[0], lvl[1]) for lvl in bids))
        _apply(st.asks, tuple((lvl[0], lvl[1]) for lvl in asks))
        prev = st.seq_id
        reset = self.spec.reset_at_s
        if reset is not None and st.symbol not in self.reset_done and d["E"] >= self.start_ms + reset * 1000:
            self.reset_done.add(st.symbol)
            st.seq_id = self.rng.randint(0, 1000)  # maintenance: the sequence restarts lower, still chained
        else:
            st.seq_id += self.rng.randint(1, 20)
        st.ts = d["E"]
        self.push(
            receive_time,
            "books",
            st.inst_id,
            [{"asks": asks, "bids": bids, "ts": str(d["E"]), "checksum": 0, "prevSeqId": prev, "seqId": st.seq_id}],
            action="update",
        )
        if self.rng.random() < self.spec.heartbeat_probability:
            self.push(
                receive_time + 1e-6,
                "books",
                st.inst_id,
                [
                    {
                        "asks": [],
                        "bids": [],
                        "ts": str(d["E"]),
                        "checksum": 0,
                        "prevSeqId": st.seq_id,
                        "seqId": st.seq_id,
                    }
                ],
                action="update",
            )

    def mark(self, receive_time: float, d: dict[str, Any], initial: bool = False) -> None:
        st = self.state[d["s"]]
        ts = str(d["E"])
        st.mark = {"instId": st.inst_id, "instType": "SWAP", "markPx": d["p"], "ts": ts}
        index_moved = st.index.get("idxPx") != d["i"]
        st.index = {
            "instId": st.index_id,
            "idxPx": d["i"],
            "high24h": d["i"],
            "low24h": d["i"],
            "open24h": d["i"],
            "sodUtc0": d["i"],
            "sodUtc8": d["i"],
            "ts": ts,
        }
        funding_due = (
            st.funding.get("fundingRate") != d["r"]
            or st.funding.get("fundingTime") != str(d["T"])
            or d["E"] - int(st.funding.get("ts", 0)) >= FUNDING_PUSH_MS
        )
        if funding_due:
            st.funding = {
                "formulaType": "noRate",
                "fundingRate": d["r"],
                "fundingTime": str(d["T"]),
                "impactValue": "",
                "instId": st.inst_id,
                "instType": "SWAP",
                "interestRate": "",
                "method": "current_period",
                "maxFundingRate": "0.00375",
                "minFundingRate": "-0.00375",
                "nextFundingRate": "",
                "nextFundingTime": str(d["T"] + FUNDING_INTERVAL_MS),
                "premium": "0.0001",
                "settFundingRate": d["r"],
                "settState": "settled",
                "ts": ts,
            }
        index = Decimal(d["i"])
        st.spot = {
            "instType": "SPOT",
            "instId": st.index_id,
            "last": d["i"],
            "lastSz": "0.1",
            "askPx": format(index + SPOT_HALF_SPREAD, "f"),
            "askSz": "1",
            "bidPx": format(index - SPOT_HALF_SPREAD, "f"),
            "bidSz": "1",
            "open24h": d["i"],
            "high24h": d["i"],
            "low24h": d["i"],
            "volCcy24h": "0",
            "vol24h": "0",
            "sodUtc0": d["i"],
            "sodUtc8": d["i"],
            "ts": ts,
        }
        if initial:
            return
        self.push(receive_time, "mark-price", st.inst_id, [dict(st.mark)])
        self.push(receive_time, "tickers", st.index_id, [dict(st.spot)])
        if index_moved:
            self.push(receive_time, "index-tickers", st.index_id, [dict(st.index)])
        if funding_due:
            self.push(receive_time, "funding-rate", st.inst_id, [dict(st.funding)])

    def run(self) -> OkxSession:
        handlers = {"aggTrade": self.trade, "depthUpdate": self.book, "markPriceUpdate": self.mark}
        first_marks: dict[str, int] = {}
        for frame in self.market.frames:
            if frame.event == "markPriceUpdate":
                first_marks.setdefault(frame.payload["s"], frame.index)
        for index in first_marks.values():  # the initial mark/index/funding are each symbol's first mark update
            self.mark(0.0, self.market.frames[index].payload, initial=True)
        initial = {s: _copy(st) for s, st in self.state.items()}
        for frame in self.market.frames:
            if frame.index not in first_marks.values() and frame.event in handlers:
                handlers[frame.event](frame.receive_time, frame.payload)
        recording = Recording(
            frames=tuple(self.frames),
            rest={},
            symbols=self.market.symbols,
            initial_books=dict(self.market.initial_books),
            configuration={"synthetic": self.spec.model_dump(mode="json")},
            source=f"okx-synthetic(seed={self.spec.seed})",
        )
        return OkxSession(recording, initial, self.start_ms, {i: tuple(f) for i, f in self.fills.items()})


def generate_okx_session(spec: OkxSyntheticSpec | None = None, **overrides: Any) -> OkxSession:
    """Deterministic synthetic OKX session; ``generate_okx_session(seed=3, duration_s=60)`` also works."""
    spec = spec or OkxSyntheticSpec()
    if overrides:
        spec = OkxSyntheticSpec.model_validate({**spec.model_dump(), **overrides})
    return _Translator(spec).run()
