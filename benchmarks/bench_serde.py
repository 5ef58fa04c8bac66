"""Encode/decode throughput of AvroSerde for md.trades, single core (no asserts: numbers only).

The producer target is 100k msgs/s/core for parse -> normalise -> encode, so encode alone has to
leave most of that budget; this measures it in isolation, with the committed file registry.

    .venv/bin/python -m benchmarks.bench_serde [--n 200000]
"""

from __future__ import annotations

import argparse
import time

from schemas.registry import FileSchemaRegistry
from schemas.serde import AvroSerde


def trades(n: int) -> list[dict]:
    """Realistic BTCUSDT aggTrades: consecutive agg ids, prices around 67,000, ms timestamps."""
    t0 = 1_718_000_000_000
    return [
        {
            "exchange": "binance",
            "symbol": "BTCUSDT",
            "agg_id": 2_270_000_000 + i,
            "price": 67_012.4 + (i % 50) * 0.1,
            "qty": 0.003 + (i % 7) * 0.011,
            "first_trade_id": 5_100_000_000 + 2 * i,
            "last_trade_id": 5_100_000_001 + 2 * i,
            "event_time": t0 + i,
            "trade_time": t0 + i - 3,
            "receive_time": t0 + i + 41,
            "taker_side": "BUY" if i % 3 else "SELL",
        }
        for i in range(n)
    ]


def rate(label: str, n: int, fn) -> None:
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    print(f"{label:<36} {n / best:>12,.0f} msgs/s  ({best / n * 1e6:.2f} us/msg, best of 3)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=200_000)
    n = parser.parse_args().n
    records = trades(n)
    fast = AvroSerde(FileSchemaRegistry())
    strict = AvroSerde(FileSchemaRegistry(), strict=True)
    encoded = [fast.encode("md.trades", r) for r in records]
    print(f"md.trades, {n:,} records, {len(encoded[0])} bytes each")
    rate("encode (default)", n, lambda: [fast.encode("md.trades", r) for r in records])
    rate("encode (strict=True, validated)", n, lambda: [strict.encode("md.trades", r) for r in records])
    rate("decode (as written)", n, lambda: [fast.decode(b) for b in encoded])
    rate("decode (topic= reader, same id)", n, lambda: [fast.decode(b, topic="md.trades") for b in encoded])


if __name__ == "__main__":
    main()
