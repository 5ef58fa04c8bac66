"""A local fake Binance USD-M exchange for tests, demos and producer development.

Replays a recorded or synthetic session over Binance's websocket protocol (combined ``/stream`` and
raw ``/ws``, SUBSCRIBE/UNSUBSCRIBE), serves the REST endpoints the producers use (depth snapshots
consistent with the replayed diff chain, aggTrades paging for gap fills, exchangeInfo, market
indicators, spot and Coinbase tickers) and injects faults on demand (dropped connections, skipped
frames, garbage frames, latency, 418/429/5xx). Everything binds to loopback.

Entry points: ``await serve(config)`` in code, ``run(config)`` blocking, and
``python -m fake_exchange --recording DIR``.
"""

from .config import FakeExchangeConfig
from .exchange import FakeExchange, run, serve
from .faults import FaultSettings
from .recording import RecordedFrame, Recording, RestResponse, load_recording
from .synthetic import SyntheticSpec, generate_session

__all__ = [
    "FakeExchange",
    "FakeExchangeConfig",
    "FaultSettings",
    "RecordedFrame",
    "Recording",
    "RestResponse",
    "SyntheticSpec",
    "generate_session",
    "load_recording",
    "run",
    "serve",
]
