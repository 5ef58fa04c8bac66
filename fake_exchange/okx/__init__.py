"""A local fake OKX v5 exchange (USDT perpetual swaps) for tests, demos and producer development.

Replays a deterministic synthetic session (:mod:`.synthetic`: aggregated trades with consecutive trade
ids, ``books`` updates chained by ``seqId``/``prevSeqId`` with heartbeats and an optional sequence
reset, mark/index/funding pushes; sizes in contracts) over OKX's public websocket protocol
(subscribe/unsubscribe, text ping/pong, the current state pushed on subscribe) and its public REST
(instruments, books with ``seqId``, funding rate, mark price), with the Binance fake's fault switches
and control API. Everything binds to loopback.

Entry point: ``await serve_okx(session_or_spec, speed=..., faults=...)``.
"""

from .exchange import FakeOkxExchange, serve_okx
from .market import OkxMarket
from .synthetic import OkxSession, OkxSyntheticSpec, generate_okx_session

__all__ = ["FakeOkxExchange", "OkxMarket", "OkxSession", "OkxSyntheticSpec", "generate_okx_session", "serve_okx"]
