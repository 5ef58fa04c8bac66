"""Builders shared by the execution tests (no tests in this module).

Records are built field by field from the Avro schemas; a `Harness` drives the pure executor with the
paper broker and an in-memory sink, and encodes every emitted record with the strict serde, so every
test also checks that the executor's output matches the schemas.
"""

from __future__ import annotations

from typing import Any

from execution.config import ExecutorConfig
from execution.executor import Executor, ListSink
from execution.paper_broker import PaperBroker
from schemas.registry import FileSchemaRegistry
from schemas.serde import AvroSerde

SERDE = AvroSerde(FileSchemaRegistry(), strict=True)
T0 = 1_790_000_000_000  # 2026-09-21T13:33:20Z, a fixed event time
EXCHANGE, SYMBOL = "binance", "BTCUSDT"


def signal_record(
    *,
    direction: str = "LONG",
    price: float = 100.0,
    risk: float = 2.0,
    tp1_r: float = 1.0,
    tp2_r: float = 2.0,
    tier: str = "standard",
    strategy: str = "v53",
    eval_time: int = T0,
    symbol: str = SYMBOL,
    is_flip: bool = False,
    signal_id: str | None = None,
    timeout_ms: int | None = None,
) -> dict[str, Any]:
    """A signal record; `timeout_ms` None is what a signal written before signals carried their
    strategy's timeout decodes to (the executor then applies its own setting)."""
    sign = 1 if direction == "LONG" else -1
    sid = signal_id or f"{strategy}:abc123:{EXCHANGE}:{symbol}:{eval_time}:{direction}"
    return {
        "signal_id": sid,
        "strategy": strategy,
        "strategy_version": "1.0",
        "config_hash": "abc123",
        "exchange": EXCHANGE,
        "symbol": symbol,
        "eval_time": eval_time,
        "direction": direction,
        "tier": tier,
        "score": 80.0,
        "factors": {"direction": 40.0},
        "price": price,
        "atr": risk / 1.5,
        "risk_distance": risk,
        "sl_price": price - sign * risk,
        "tp1_price": price + sign * tp1_r * risk,
        "tp2_price": price + sign * tp2_r * risk,
        "sl_r": 1.0,
        "tp1_r": tp1_r,
        "tp2_r": tp2_r,
        "is_flip": is_flip,
        "timeout_ms": timeout_ms,
    }


_AGG = [1000]


def trade_record(
    price: float, t: int, *, qty: float = 1.0, symbol: str = SYMBOL, taker_side: str = "BUY", agg_id: int | None = None
) -> dict[str, Any]:
    if agg_id is None:
        _AGG[0] += 1
        agg_id = _AGG[0]
    return {
        "exchange": EXCHANGE,
        "symbol": symbol,
        "agg_id": agg_id,
        "price": price,
        "qty": qty,
        "first_trade_id": agg_id * 2,
        "last_trade_id": agg_id * 2,
        "event_time": t,
        "trade_time": t,
        "receive_time": t,
        "taker_side": taker_side,
    }


def book_record(bid: float, ask: float, t: int, symbol: str = SYMBOL) -> dict[str, Any]:
    return {
        "exchange": EXCHANGE,
        "symbol": symbol,
        "last_update_id": t,
        "event_time": t,
        "receive_time": t,
        "bids": [{"price": bid, "qty": 1.0}],
        "asks": [{"price": ask, "qty": 1.0}],
        "obi_10": 0.0,
    }


def taker_unless_chosen(config: ExecutorConfig | None) -> ExecutorConfig:
    """``config`` with market entries (``entry.kind: taker``) unless it names its entry kind: the tests on
    the harness hand-compute one market entry filled whole at the next trade, whatever the executor's
    default kind is (``routed`` works an entry by the routing table: maker wait, TWAP slices). A test of
    another kind says so (``entry: {kind: ...}``)."""
    config = config or ExecutorConfig()
    if "kind" in config.entry.model_fields_set:
        return config
    return config.model_copy(update={"entry": config.entry.model_copy(update={"kind": "taker"})})


class Harness:
    """Executor + paper broker + list sink; `now` is the injected clock (defaults to the trade times)."""

    def __init__(
        self, config: ExecutorConfig | None = None, mode: str = "paper", now: int = T0, warm: bool = True
    ) -> None:
        self.config = taker_unless_chosen(config)
        self.sink = ListSink()
        self.broker = PaperBroker(self.config.fees, self.config.paper)
        self.ex = Executor(self.config, mode, self.broker, self.sink, now)
        self.now = now - 1000
        if warm:  # one trade before the first signal, so market data is fresh (it fills nothing)
            self.trade(100.0, now - 1000)

    def signal(self, now: int | None = None, **kw):
        rec = signal_record(**kw)
        self.now = max(self.now, now if now is not None else rec["eval_time"])
        return self.ex.on_signal(rec, self.now)

    def signal_rec(self, rec: dict, now: int | None = None):
        self.now = max(self.now, now if now is not None else rec["eval_time"])
        return self.ex.on_signal(rec, self.now)

    def trade(self, price: float, t: int, **kw) -> None:
        self.now = max(self.now, t)
        self.ex.on_trade(trade_record(price, t, **kw), self.now)

    def book(self, bid: float, ask: float, t: int) -> None:
        self.now = max(self.now, t)
        self.ex.on_book(book_record(bid, ask, t), self.now)

    def clock(self, now: int) -> None:
        self.now = now
        self.ex.on_clock(now)

    def of(self, topic: str) -> list[dict[str, Any]]:
        out = self.sink.of(topic)
        for rec in out:
            SERDE.encode(topic, rec)  # every emitted record must match its schema
        return out

    def positions(self, event: str | None = None) -> list[dict[str, Any]]:
        return [p for p in self.of("positions") if event is None or p["event"] == event]

    def closed(self) -> dict[str, Any]:
        closed = self.positions("closed")
        assert len(closed) == 1, closed
        return closed[0]

    def risk(self, reason: str | None = None) -> list[dict[str, Any]]:
        return [r for r in self.of("risk.events") if reason is None or r["reason"] == reason]

    def fills(self) -> list[dict[str, Any]]:
        return self.of("fills")
