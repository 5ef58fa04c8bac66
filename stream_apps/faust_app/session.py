"""A deterministic market session as ``md.*`` Avro records, and a way to produce it to the broker.

Why: the parity test, the worker tests and the benchmarks need all five engine inputs (not only the
trades of ``stream_apps.core.synthetic``) in the exact shape the producers publish, reproducible from a
seed, and produced the way the producers do it (librdkafka, key ``exchange:symbol``, the default
partitioner), so partitions and co-partitioning match production.

Every record carries the event time the engine orders it by; ``SessionRecord.time_ms`` repeats it so
callers can sort, cut or pace a session without knowing each schema.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from confluent_kafka import Producer

from schemas.catalogue import market_key
from schemas.serde import AvroSerde
from stream_apps.core.events import (
    TradeBatch,
    book_from_record,
    indicator_from_record,
    liquidation_from_record,
    mark_from_record,
    obi_from_levels,
)
from stream_apps.core.synthetic import synthetic_trades
from tapeflow_runtime.kafka_client import producer_config

DEFAULT_SYMBOLS = (("BTCUSDT", 30_000.0), ("ETHUSDT", 2_000.0))


@dataclass(frozen=True, slots=True)
class SessionRecord:
    topic: str  # catalogue topic (unprefixed)
    key: str  # exchange:symbol
    time_ms: int  # the engine's event time of the record
    value: dict[str, Any]


def trade_records(batch: TradeBatch, receive_delay_ms: int = 20) -> list[SessionRecord]:
    key = market_key(batch.exchange, batch.symbol)
    out = []
    for agg_id, t, price, qty, sell in zip(
        batch.agg_id.tolist(),
        batch.time_ms.tolist(),
        batch.price.tolist(),
        batch.qty.tolist(),
        batch.taker_sell.tolist(),
    ):
        out.append(
            SessionRecord(
                "md.trades",
                key,
                t,
                {
                    "exchange": batch.exchange,
                    "symbol": batch.symbol,
                    "agg_id": agg_id,
                    "price": price,
                    "qty": qty,
                    "first_trade_id": agg_id * 3,
                    "last_trade_id": agg_id * 3 + 2,
                    "event_time": t + 1,
                    "trade_time": t,
                    "receive_time": t + receive_delay_ms,
                    "taker_side": "SELL" if sell else "BUY",
                },
            )
        )
    return out


@dataclass(frozen=True)
class _Market:
    """One symbol of a session: its key, its place in the session (which phases its series), and the
    trade prices the other inputs follow."""

    exchange: str
    symbol: str
    key: str  # exchange:symbol
    index: int
    price0: float
    times: np.ndarray
    prices: np.ndarray

    def price_at(self, t: int) -> float:
        """The last trade's price at or before `t` (the first trade's before any)."""
        j = int(np.searchsorted(self.times, t, side="right")) - 1
        return float(self.prices[max(j, 0)])


def _book_records(
    m: _Market, rng: np.random.Generator, start_ms: int, duration_ms: int, every_ms: int
) -> list[SessionRecord]:
    """Ten-level books around the trade price, tilted slowly one way then the other."""
    out: list[SessionRecord] = []
    for k, t in enumerate(range(start_ms + 137, start_ms + duration_ms, every_ms)):
        mid = m.price_at(t)
        tilt = 0.4 * np.sin(k / 40.0 + m.index) + 0.1 * rng.normal()
        step = mid * 1e-4
        bids = [
            {"price": round(mid - step * (n + 1), 6), "qty": round(float(1 + tilt + rng.random()), 4)}
            for n in range(10)
        ]
        asks = [
            {"price": round(mid + step * (n + 1), 6), "qty": round(float(1 - tilt + rng.random()), 4)}
            for n in range(10)
        ]
        obi = obi_from_levels([(b["price"], b["qty"]) for b in bids], [(a["price"], a["qty"]) for a in asks])
        out.append(
            SessionRecord(
                "md.book",
                m.key,
                t,
                {
                    "exchange": m.exchange,
                    "symbol": m.symbol,
                    "last_update_id": k + 1,
                    "event_time": t,
                    "receive_time": t + 15,
                    "bids": bids,
                    "asks": asks,
                    "obi_10": obi,
                },
            )
        )
    return out


def _mark_records(m: _Market, start_ms: int, duration_ms: int, every_ms: int) -> list[SessionRecord]:
    """Mark prices at the trade price, with a slowly swinging funding rate."""
    out: list[SessionRecord] = []
    for k, t in enumerate(range(start_ms + 311, start_ms + duration_ms, every_ms)):
        mark = m.price_at(t)
        out.append(
            SessionRecord(
                "md.mark",
                m.key,
                t,
                {
                    "exchange": m.exchange,
                    "symbol": m.symbol,
                    "mark_price": mark,
                    "index_price": mark * (1 - 2e-4),
                    "funding_rate": round(0.0004 * np.sin(k / 300.0 + m.index), 7),
                    "next_funding_time": (t // 28_800_000 + 1) * 28_800_000,
                    "event_time": t,
                    "receive_time": t + 10,
                },
            )
        )
    return out


def _indicator_records(
    m: _Market, rng: np.random.Generator, start_ms: int, duration_ms: int, every_ms: int
) -> list[SessionRecord]:
    """Every 5-minute indicator kind (the Coinbase premium for BTC and ETH only), published 29 s after
    its value's time."""
    out: list[SessionRecord] = []
    for k, t in enumerate(range(start_ms + 29_000, start_ms + duration_ms, every_ms)):
        value_time = t - 29_000
        kinds: list[tuple[str, float, dict[str, float]]] = [
            ("open_interest_hist", 1e5 * (1 + 0.02 * np.sin(k / 2.0 + m.index)), {}),
            ("long_short_account_ratio", float(0.6 + 0.8 * rng.random()), {}),
            ("top_trader_position_ratio", float(0.8 + 0.5 * rng.random()), {}),
            ("taker_buy_sell_ratio", float(0.8 + 0.4 * rng.random()), {}),
            ("spot_perp_divergence", float(0.001 * rng.normal()), {}),
        ]
        if m.symbol in ("BTCUSDT", "ETHUSDT"):
            kinds.append(("coinbase_premium", float(0.0008 * rng.normal()), {}))
        for kind, value, extra in kinds:
            if kind == "top_trader_position_ratio":
                extra = {"long_account": round(value / (1 + value), 6)}
            out.append(
                SessionRecord(
                    "md.indicators",
                    m.key,
                    t,
                    {
                        "exchange": m.exchange,
                        "symbol": m.symbol,
                        "kind": kind,
                        "value": value,
                        "period": "5m",
                        "extra": extra,
                        "event_time": value_time,
                        "receive_time": t,
                    },
                )
            )
    return out


def _liquidation_records(
    m: _Market, rng: np.random.Generator, start_ms: int, duration_ms: int, per_min: float
) -> list[SessionRecord]:
    """Liquidations at Poisson-many random times, either side, lognormal in USD size."""
    out: list[SessionRecord] = []
    n_liq = rng.poisson(per_min * duration_ms / 60_000)
    for t in np.sort(rng.integers(start_ms, start_ms + duration_ms, n_liq)).tolist():
        side = "BUY" if rng.random() < 0.5 else "SELL"
        qty = round(float(rng.lognormal(0.0, 1.0)) * 50_000 / m.price0, 4)
        avg = m.price_at(t)
        out.append(
            SessionRecord(
                "md.liquidations",
                m.key,
                t,
                {
                    "exchange": m.exchange,
                    "symbol": m.symbol,
                    "side": side,
                    "liquidated_side": "SHORT" if side == "BUY" else "LONG",
                    "price": avg,
                    "avg_price": avg,
                    "qty": qty,
                    "filled_qty": qty,
                    "usd_value": avg * qty,
                    "event_time": t + 5,
                    "trade_time": t,
                    "receive_time": t + 20,
                },
            )
        )
    return out


def synthetic_session(
    symbols: Sequence[tuple[str, float]] = DEFAULT_SYMBOLS,
    *,
    exchange: str = "binance",
    start_ms: int = 1_700_006_400_000,
    duration_ms: int = 3_600_000,
    trades_per_s: float = 5.0,
    book_every_ms: int = 1_000,
    mark_every_ms: int = 3_000,
    indicator_every_ms: int = 300_000,
    liquidations_per_min: float = 2.0,
    seed: int = 11,
) -> list[SessionRecord]:
    """All five inputs for ``symbols`` over ``duration_ms``, sorted by event time (then topic)."""
    rng = np.random.default_rng(seed)  # one generator for every symbol and input, drawn in this order
    records: list[SessionRecord] = []
    for i, (symbol, price0) in enumerate(symbols):
        trades = synthetic_trades(
            symbol,
            exchange=exchange,
            start_ms=start_ms,
            duration_ms=duration_ms,
            rate_per_s=trades_per_s,
            price0=price0,
            seed=seed + i,
        )
        records += trade_records(trades)
        m = _Market(exchange, symbol, market_key(exchange, symbol), i, price0, trades.time_ms, trades.price)
        records += _book_records(m, rng, start_ms, duration_ms, book_every_ms)
        records += _mark_records(m, start_ms, duration_ms, mark_every_ms)
        records += _indicator_records(m, rng, start_ms, duration_ms, indicator_every_ms)
        records += _liquidation_records(m, rng, start_ms, duration_ms, liquidations_per_min)
    order = {"md.trades": 0, "md.book": 1, "md.mark": 2, "md.liquidations": 3, "md.indicators": 4}
    records.sort(key=lambda r: (r.time_ms, order[r.topic]))
    return records


def engine_inputs(records: Iterable[SessionRecord]) -> tuple[list[TradeBatch], list]:
    """The same records as direct ``Engine.process`` input: one TradeBatch per symbol, the events."""
    trades: dict[str, list[dict]] = {}
    events = []
    adapters: dict[str, Callable[[dict], Any]] = {
        "md.book": book_from_record,
        "md.mark": mark_from_record,
        "md.liquidations": liquidation_from_record,
        "md.indicators": indicator_from_record,
    }
    for r in records:
        if r.topic == "md.trades":
            trades.setdefault(r.key, []).append(r.value)
        else:
            events.append(adapters[r.topic](r.value))
    batches = [
        TradeBatch.from_arrays(
            rows[0]["exchange"],
            rows[0]["symbol"],
            [t["agg_id"] for t in rows],
            [t["trade_time"] for t in rows],
            [t["price"] for t in rows],
            [t["qty"] for t in rows],
            [t["taker_side"] == "SELL" for t in rows],
        )
        for rows in trades.values()
    ]
    return batches, events


class SessionProducer:
    """Produces session records like the real producers: librdkafka, idempotent, default partitioner."""

    def __init__(self, bootstrap: str, serde: AvroSerde, topic_prefix: str = "", **overrides: Any) -> None:
        self.serde = serde
        self.prefix = topic_prefix
        self.producer = Producer(
            producer_config(
                bootstrap,
                **{
                    "linger.ms": 20,
                    "batch.num.messages": 10_000,
                    "queue.buffering.max.messages": 1_000_000,
                    **overrides,
                },
            )
        )
        self.produced = 0

    def produce(self, record: SessionRecord, value_override: dict[str, Any] | None = None) -> None:
        value = self.serde.encode(record.topic, value_override or record.value)
        while True:
            try:
                self.producer.produce(self.prefix + record.topic, key=record.key.encode(), value=value)
                break
            except BufferError:
                self.producer.poll(0.05)
        self.produced += 1
        if self.produced % 5_000 == 0:
            self.producer.poll(0)

    def produce_all(self, records: Iterable[SessionRecord]) -> int:
        n = 0
        for record in records:
            self.produce(record)
            n += 1
        self.flush()
        return n

    def flush(self, timeout: float = 60.0) -> None:
        remaining = self.producer.flush(timeout)
        if remaining:
            raise RuntimeError(f"{remaining} session records not delivered within {timeout} s")


def wall_clock_ms() -> int:
    return int(time.time() * 1000)


def read_topic(
    bootstrap: str,
    topic: str,
    serde: AvroSerde,
    idle_s: float = 2.0,
    timeout_s: float = 120.0,
    isolation_level: str = "read_uncommitted",
) -> list[tuple[bytes | None, int, int, dict[str, Any]]]:
    """Every record of ``topic`` as (key, partition, timestamp_ms, decoded value), read until nothing
    arrived for ``idle_s``: a topic still being written has no end to read to."""
    from confluent_kafka import Consumer, TopicPartition

    from tapeflow_runtime.kafka_client import consumer_config, topic_metadata

    consumer = Consumer(consumer_config(bootstrap, **{"isolation.level": isolation_level}))
    try:
        metadata = topic_metadata(consumer, topic, timeout_s=max(10.0, timeout_s))
        consumer.assign([TopicPartition(topic, p, -2) for p in metadata.partitions])
        out = []
        quiet = 0.0
        deadline = time.monotonic() + timeout_s
        while quiet < idle_s and time.monotonic() < deadline:
            message = consumer.poll(0.25)
            if message is None:
                quiet += 0.25
                continue
            quiet = 0.0
            if message.error():
                continue
            out.append((message.key(), message.partition(), message.timestamp()[1], serde.decode(message.value())))
        return out
    finally:
        consumer.close()
