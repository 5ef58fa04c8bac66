"""Cross-venue records the watchlist tests share: an xv.features sample and md.book/md.mark records."""

from __future__ import annotations

T = 1_706_745_600_000  # 2024-02-01 00:00:00 UTC

XV_FEATURE = {
    "feature_id": f"BTC:{T}:okx:binance",
    "coin": "BTC",
    "eval_time": T,
    "sell_venue": "okx",
    "buy_venue": "binance",
    "sell_symbol": "BTC-USDT-SWAP",
    "buy_symbol": "BTCUSDT",
    "sweep_notional_usd": 10_000.0,
    "spread_top": 0.000412,
    "spread_sweep": 0.000301,
    "sell_bid": 42_600.5,
    "buy_ask": 42_583.0,
    "sell_sweep_bid": 42_599.9,
    "buy_sweep_ask": 42_587.1,
    "top_slope_per_min": -1.2e-6,
    "sweep_slope_per_min": None,
    "leg_skew_ms": 120,
    "sell_book_age_ms": 180,
    "buy_book_age_ms": 60,
    "funding_diff": 0.00005,
    "funding_diff_8h": 0.00005,
    "sell_funding_rate": 0.00015,
    "buy_funding_rate": 0.0001,
    "sell_next_funding_time": T + 3_600_000,
    "buy_next_funding_time": T + 3_600_000,
    "sell_basis": 0.0004,
    "buy_basis": None,
    "stats": {"top_1h_n": 12.0, "top_1h_mean": 0.0003, "top_1h_std": None},
    "missing": {"buy_basis": "no spot price for binance", "sweep_slope_per_min": "slope window: 1 samples"},
}


def book(
    exchange: str, symbol: str, time_ms: int, bids: list[tuple[float, float]], asks: list[tuple[float, float]]
) -> dict:
    """An md.book record (book_snapshot.avsc) with these levels."""
    return {
        "exchange": exchange,
        "symbol": symbol,
        "last_update_id": time_ms,
        "event_time": time_ms,
        "receive_time": time_ms + 5,
        "bids": [{"price": p, "qty": q} for p, q in bids],
        "asks": [{"price": p, "qty": q} for p, q in asks],
        "obi_10": 0.0,
    }


def mark(exchange: str, symbol: str, time_ms: int, funding_rate: float, next_funding_time: int) -> dict:
    """An md.mark record (mark_price.avsc)."""
    return {
        "exchange": exchange,
        "symbol": symbol,
        "mark_price": 1.0,
        "index_price": 1.0,
        "funding_rate": funding_rate,
        "next_funding_time": next_funding_time,
        "event_time": time_ms,
        "receive_time": time_ms + 5,
    }


def running_watchlist(settings, options):
    """The watchlist service (`run_watchlist`) on a thread until `.close()` (its exit code)."""
    from dataclasses import replace

    from stream_apps.watchlist.service import run_watchlist
    from tests.support.services import ServiceThread

    return ServiceThread(lambda stop: run_watchlist(settings, replace(options, stop=stop)))
