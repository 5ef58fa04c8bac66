"""A local fake Bybit v5 linear exchange for tests, demos and producer development.

Replays a deterministic synthetic session (:mod:`.synthetic`: trades, orderbook deltas with chained
``u``, tickers deltas, liquidations) over Bybit's public websocket protocol (subscribe/unsubscribe,
JSON ping/pong, snapshots on subscribe) with the Binance fake's fault switches (skip frames of a
topic, garbage frames, delay, dropped connections) and control API. Everything binds to loopback.

Entry points: ``await serve_bybit(session_or_spec, speed=..., faults=...)`` in code,
``run_bybit(spec)`` blocking.
"""

from .exchange import FakeBybitExchange, run_bybit, serve_bybit
from .market import BybitMarket
from .synthetic import BybitSession, BybitSyntheticSpec, generate_bybit_session

__all__ = [
    "BybitMarket",
    "BybitSession",
    "BybitSyntheticSpec",
    "FakeBybitExchange",
    "generate_bybit_session",
    "run_bybit",
    "serve_bybit",
]
