"""Records of the watchlist's trading topics (xv.signals, xv.orders, xv.funding, xv.pairs) the schema and
sink tests share: one hedge, okx short and binance long, opened on a signal and closed on convergence,
with one funding settlement in between; shaped like execution.hedged's to_record() dicts plus the
fields the trading service adds (coin, seq, event_time)."""

from __future__ import annotations

from execution.client_ids import client_order_id, pair_id

T = 1_706_745_600_000  # 2024-02-01 00:00:00 UTC
HOUR = 3_600_000

SIGNAL_ID = f"xv:xv_convergence:1:03ce185567ca:BTC:okx>binance:{T}"
PAIR_ID = pair_id(SIGNAL_ID)

XV_SIGNAL = {
    "signal_id": SIGNAL_ID,
    "strategy": "xv_convergence",
    "strategy_version": "1",
    "config_hash": "03ce185567ca",
    "coin": "BTC",
    "eval_time": T,
    "sell_venue": "okx",
    "buy_venue": "binance",
    "sell_symbol": "BTC-USDT-SWAP",
    "buy_symbol": "BTCUSDT",
    "notional_usd": 10_000.0,
    "status": "signal",
    "reason": None,
    "z_1h": 2.85,
    "spread_sweep": 0.00301,
    "net_spread": 0.00101,
    "funding_diff_8h": 0.00005,
    "entry_spread": 0.00296,
    "entry_net_spread": 0.00096,
    "entry_sell_vwap": 42_599.9,
    "entry_buy_vwap": 42_473.8,
    "expected_pnl": 0.0007,
    "win_prob": 0.64,
    "imputed": {"drift_1h": "1 h window has 40 samples, needs 60"},
    "feature_id": f"BTC:{T}:okx:binance",
    # (four fees 0.002 + sweeps 0.0001) / 0.00005 per 8 h x 8 = 336 h to break even on the carry alone
    "expected_carry_8h_usd": 0.5,
    "entry_sweep_cost": 0.0001,
    "break_even_hours": 336.0,
}

XV_LEG_ORDER = {
    "client_order_id": client_order_id(SIGNAL_ID, "pair_short_entry"),
    "pair_id": PAIR_ID,
    "signal_id": SIGNAL_ID,
    "coin": "BTC",
    "leg": "short",
    "action": "entry",
    "venue": "okx",
    "symbol": "BTC-USDT-SWAP",
    "side": "SELL",
    "qty": 0.234,
    "avg_price": 42_599.9,
    "top_price": 42_600.5,
    "fee": 4.98419,
    "slippage_usd": 0.1404,
    "status": "FILLED",
    "reason": None,
    "time_ms": T + 150,
    "book_time_ms": T + 20,
    # leg timing (execution.leg_fills): sent at T + 50, met the book at T + 150; the touch rose 0.5 on the way
    "filled_qty": 0.234,
    "ref_price": 42_600.0,
    "limit_price": 42_450.0,
    "sent_ms": T + 50,
    "attempt": 0,
    "latency_usd": -0.117,
    "liquidation_usd": 0.0,
}

XV_FUNDING_PAYMENT = {
    "pair_id": PAIR_ID,
    "coin": "BTC",
    "leg": "short",
    "venue": "okx",
    "symbol": "BTC-USDT-SWAP",
    "funding_time_ms": T + 8 * HOUR,
    "rate": 0.00015,
    "mark_price": 42_510.2,
    "qty": 0.234,
    "paid": -1.49211,
    "predicted_rate": 0.0001,
}

XV_PAIR_EVENT = {
    "pair_id": PAIR_ID,
    "seq": 3,
    "event_time": T + 10 * HOUR,
    "signal_id": SIGNAL_ID,
    "pair_key": "BTC:binance/okx",
    "coin": "BTC",
    "short_venue": "okx",
    "short_symbol": "BTC-USDT-SWAP",
    "long_venue": "binance",
    "long_symbol": "BTCUSDT",
    "notional_usd": 10_000.0,
    "qty": 0.234,
    "status": "closed",
    "reason": None,
    "close_reason": "convergence",
    "opened_ms": T + 150,
    "closed_ms": T + 10 * HOUR,
    "entry_spread": 0.00296,
    "exit_spread": 0.00021,
    "gross_usd": 27.8226,
    "fees_usd": 19.9012,
    "slippage_usd": 0.5871,
    "funding_usd": -0.2755,
    "net_usd": 7.2098,
    "short_gross_usd": 40.1544,
    "short_fees_usd": 9.9601,
    "short_slippage_usd": 0.2808,
    "short_funding_usd": -1.49211,
    "short_net_usd": 31.30561,
    "long_gross_usd": -12.3318,
    "long_fees_usd": 9.9411,
    "long_slippage_usd": 0.3063,
    "long_funding_usd": 1.21661,
    "long_net_usd": -24.09581,
    "leg_latency_usd": 0.4,
    "liquidation_usd": 0.0,
    "short_leg_latency_usd": 0.1,
    "short_liquidation_usd": 0.0,
    "long_leg_latency_usd": 0.3,
    "long_liquidation_usd": 0.0,
}

# A manual open asked from the desk (xv.commands, status requested): short okx, long binance.
XV_COMMAND = {
    "command_id": "5f0c2a9d4b7e41c8a3d6e2f1b0c9a8d7",
    "status": "requested",
    "action": "open",
    "strategy": "xv_basis",
    "coin": "BTC",
    "sell_venue": "okx",
    "sell_symbol": "BTC-USDT-SWAP",
    "buy_venue": "binance",
    "buy_symbol": "BTCUSDT",
    "pair_id": None,
    "notional_usd": 10_000.0,
    "shown_spread": 0.00031,
    "shown_time": T,
    "requested_time": T + 2_500,
    "acted_time": None,
    "who": "ui cookie session from 127.0.0.1",
    "reason": "spread wide after the okx outage",
    "detail": None,
}
