"""The watchlist backtest: a hand-built two-venue session through the cross-venue features, the
strategy and the hedged pair model, its pnl recomputed by hand (four fees, slippage from the sweep,
funding on both legs, convergence exit); a generated three-venue session gives the same signals and
pairs however it is batched. Pure, in process."""

from __future__ import annotations

import json

import numpy as np
import pytest

from backtest.watchlist.runner import WatchlistBacktest, run_backtest
from backtest.watchlist.synthetic import session
from execution.client_ids import client_order_id, pair_id
from stream_apps.cross_venue.events import BookEvent, FundingEvent
from stream_apps.watchlist.strategy import parse_watchlist_strategy

T0 = 1_704_096_000_000 - 60_000  # 07:59:00 UTC; binance and okx settle funding at 08:00
SETTLE = T0 + 60_000
FEE = 0.0005

STRATEGY = parse_watchlist_strategy(
    {
        "kind": "watchlist",
        "name": "xv_hand",
        "version": "1",
        "venues": ["binance", "okx"],
        "notional_usd": 1_000,
        "fees": {"default": FEE},
        "triggers": {"min_net_spread_bp": 5},
        "exits": {"exit_spread_bp": 20},
    }
)

RICH = {"binance": (((101.0, 5.0), (100.9, 50.0)), ((101.1, 50.0),)), "okx": (((99.9, 50.0),), ((100.0, 50.0),))}
CONVERGED = {"binance": (((100.5, 50.0),), ((100.6, 50.0),)), "okx": (((100.5, 50.0),), ((100.6, 50.0),))}
SYMBOL = {"binance": "BTCUSDT", "okx": "BTC-USDT-SWAP"}


def hand_session():
    """Books every 500 ms on both venues: binance rich until T0 + 90 s, then both converge; funding
    announced at T0 for the 08:00 settlement (binance +1 bp: shorts receive; okx -2 bp: longs receive)."""
    events = [
        FundingEvent("binance", "BTCUSDT", T0, 0.0001, SETTLE),
        FundingEvent("okx", "BTC-USDT-SWAP", T0, -0.0002, SETTLE, 4 * 3_600_000),
    ]
    for t in range(T0, T0 + 100_000, 500):
        for venue in ("binance", "okx"):
            bids, asks = (RICH if t < T0 + 90_000 else CONVERGED)[venue]
            events.append(BookEvent(venue, SYMBOL[venue], t, bids, asks))
    return events


def test_a_hedged_pair_through_the_backtest_with_its_pnl_by_hand():
    result = run_backtest(STRATEGY, hand_session())
    assert [s["status"] for s in result.signals] == ["signal"]
    signal = result.signals[0]
    assert signal["eval_time"] == T0 and (signal["sell_venue"], signal["buy_venue"]) == ("binance", "okx")
    [pair] = result.pairs
    assert pair["pair_id"] == pair_id(signal["signal_id"]) and pair["status"] == "closed"
    assert pair["close_reason"] == "convergence" and pair["closed_ms"] == T0 + 90_000
    # entry: 1,000 USD into binance's bids is 5 BTC at 101.0 and 495 USD at 100.9; okx's asks give
    # 10 BTC for 1,000 USD: both legs take the smaller amount
    qty = 5 + 495 / 100.9
    short_entry = 1_000 / qty  # the VWAP of the short leg
    assert pair["qty"] == pytest.approx(qty, rel=1e-12)
    orders = {(o["leg"], o["action"]): o for o in result.orders}
    assert orders[("short", "entry")]["avg_price"] == pytest.approx(short_entry, rel=1e-12)
    assert orders[("short", "entry")]["client_order_id"] == client_order_id(signal["signal_id"], "pair_short_entry")
    assert (
        orders[("long", "entry")]["avg_price"],
        orders[("short", "exit")]["avg_price"],
        orders[("long", "exit")]["avg_price"],
    ) == (100.0, 100.6, 100.5)
    # funding at 08:00 on both legs, at the mid of each venue's book then (both received)
    paid = {p["venue"]: p["paid"] for p in result.funding}
    assert paid["binance"] == pytest.approx(-qty * 101.05 * 0.0001, rel=1e-12)
    assert paid["okx"] == pytest.approx(qty * 99.95 * -0.0002, rel=1e-12)
    # pnl: the cash of the four fills, four taker fees, the funding; slippage is the sweep below 101.0
    cash = qty * short_entry - qty * 100.6 + qty * 100.5 - qty * 100.0
    fees = FEE * qty * (short_entry + 100.6 + 100.0 + 100.5)
    funding = paid["binance"] + paid["okx"]
    assert pair["net_usd"] == pytest.approx(cash - fees - funding, rel=1e-9)
    assert pair["fees_usd"] == pytest.approx(fees, rel=1e-12)
    assert pair["slippage_usd"] == pytest.approx(qty * 101.0 - 1_000, rel=1e-9)
    assert pair["gross_usd"] == pytest.approx(qty * (101.0 - 100.6) + qty * (100.5 - 100.0), rel=1e-12)
    s = result.summary
    assert (s["signals"], s["closed"], s["open"], s["win_rate"]) == (1, 1, 0, 1.0)
    assert s["net_usd"] == pytest.approx(pair["net_usd"]) and s["by_close_reason"]["convergence"]["pairs"] == 1
    assert s["mean_net_bp"] == pytest.approx(pair["net_usd"] / 1_000 * 1e4)
    json.dumps(result.as_dict())  # plain data all the way


def test_a_pair_still_open_at_the_end_is_closed_there_or_reported_open():
    rich_only = [e for e in hand_session() if e.time_ms < T0 + 90_000]
    result = run_backtest(STRATEGY, rich_only)
    assert [(p["status"], p["close_reason"], p["closed_ms"]) for p in result.pairs] == [
        ("closed", "end_of_session", T0 + 89_500)
    ]
    kept = run_backtest(STRATEGY, rich_only, close_at_end=False)
    assert [p["status"] for p in kept.pairs] == ["open"] and kept.summary["open"] == 1


SMALL = dict(slope_window_ms=60_000, windows=(("1h", 3_600_000, 5_000), ("12h", 43_200_000, 60_000)))
XV = parse_watchlist_strategy(
    {
        "kind": "watchlist",
        "name": "xv_generated",
        "version": "1",
        "notional_usd": 10_000,
        "cooldown": "2m",
        "triggers": {"min_net_spread_bp": 2, "min_z": 1.5, "min_window_samples": 12},
        "exits": {"exit_spread_bp": -2},
    }
)
EVENTS = session(11, 12, coins=("BTC", "ETH"), jump_per_hour=12.0)


def batched(cuts, watermarks):
    from backtest.watchlist.runner import cross_venue_params

    run = WatchlistBacktest(XV, params=cross_venue_params(XV, **SMALL))
    start = 0
    for cut in [*cuts, len(EVENTS)]:
        run.feed(EVENTS[start:cut])
        if watermarks and cut < len(EVENTS):
            run.advance_to(EVENTS[cut].time_ms - 1)  # a true watermark: nothing older follows
        start = cut
    return run.finish().as_dict()


def test_the_same_session_gives_the_same_signals_and_pairs_however_it_is_batched():
    whole = batched([], False)
    assert whole["summary"]["signals"] >= 3 and whole["summary"]["closed"] >= 2
    rng = np.random.default_rng(4)
    cuts = sorted(set(rng.integers(0, len(EVENTS), 60).tolist()))
    assert batched(cuts, True) == whole
