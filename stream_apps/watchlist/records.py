"""xv.features records (schemas/avro/cross_venue_feature.avsc) from ``CoinFeatures``: one per ordered
venue pair, with an id from the coin, the evaluation time and the pair, so the same input gives the
same records however it was batched and however often it was re-evaluated after a restart.

Missing reasons are keyed by feature: the pair's own (``spread_top``, ``spread_sweep``,
``funding_diff``, ``funding_diff_8h``), the slopes' (``top_slope_per_min``, ...) and each leg's
under ``sell_``/``buy_`` (``sell_book``, ``buy_basis``, ``sell_funding``, ...).
"""

from __future__ import annotations

from typing import Any

from stream_apps.cross_venue.state import CoinFeatures, SeriesFeatures, VenueFeatures

TOPIC = "xv.features"
STATS = ("n", "mean", "std", "min", "max", "crossings_per_hour", "drift_ratio")


def feature_id(coin: str, eval_time_ms: int, sell_venue: str, buy_venue: str) -> str:
    return f"{coin}:{eval_time_ms}:{sell_venue}:{buy_venue}"


def _stats(kind: str, series: SeriesFeatures, out: dict[str, float | None]) -> None:
    for name, window in series.windows:
        for stat in STATS:
            value = getattr(window, stat)
            out[f"{kind}_{name}_{stat}"] = None if value is None else float(value)


def _leg_reasons(side: str, venue: VenueFeatures, missing: dict[str, str]) -> None:
    for name, why in venue.reasons:
        missing.setdefault(f"{side}_{name}", why)


def feature_records(features: CoinFeatures, sweep_notional_usd: float) -> list[dict[str, Any]]:
    """The xv.features records of one coin's evaluation, in the order of its pairs."""
    out = []
    for p in features.pairs:
        sell, buy = features.venue(p.sell_venue), features.venue(p.buy_venue)
        stats: dict[str, float | None] = {}
        _stats("top", p.top, stats)
        _stats("sweep", p.sweep, stats)
        missing = dict(p.reasons)
        for kind, series in (("top", p.top), ("sweep", p.sweep)):
            if series.slope_reason is not None:
                missing[f"{kind}_slope_per_min"] = series.slope_reason
        _leg_reasons("sell", sell, missing)
        _leg_reasons("buy", buy, missing)
        out.append(
            {
                "feature_id": feature_id(features.coin, features.time_ms, p.sell_venue, p.buy_venue),
                "coin": features.coin,
                "eval_time": features.time_ms,
                "sell_venue": p.sell_venue,
                "buy_venue": p.buy_venue,
                "sell_symbol": sell.symbol,
                "buy_symbol": buy.symbol,
                "sweep_notional_usd": float(sweep_notional_usd),
                "spread_top": p.spread_top,
                "spread_sweep": p.spread_sweep,
                "sell_bid": sell.bid,
                "buy_ask": buy.ask,
                "sell_sweep_bid": sell.sweep_bid,
                "buy_sweep_ask": buy.sweep_ask,
                "top_slope_per_min": p.top.slope_per_min,
                "sweep_slope_per_min": p.sweep.slope_per_min,
                "leg_skew_ms": p.leg_skew_ms,
                "sell_book_age_ms": sell.book_age_ms,
                "buy_book_age_ms": buy.book_age_ms,
                "funding_diff": p.funding_diff,
                "funding_diff_8h": p.funding_diff_8h,
                "sell_funding_rate": sell.funding_rate,
                "buy_funding_rate": buy.funding_rate,
                "sell_next_funding_time": sell.next_funding_time_ms,
                "buy_next_funding_time": buy.next_funding_time_ms,
                "sell_basis": sell.basis,
                "buy_basis": buy.basis,
                "stats": stats,
                "missing": missing,
            }
        )
    return out
