"""Cross-venue features: per coin, across the venues that list it, the spreads
between their books (at the touch and swept for a notional), their rolling statistics, funding and
spot–perp basis, aligned by event time with a maximum staleness per leg.

Pure like ``stream_apps.core``: no Kafka or Faust import, no wall clock (every time is an event time
passed in), bounded state, and the same output for the same input however it is batched, so the
Faust stream app (keyed by coin; not written yet) and a backtest can drive the same code.

Module map:
- ``symbols``: venue symbols (``BTCUSDT``, ``BTC-USDT-SWAP``, ``1000PEPEUSDT``) to coin, quote, multiplier.
- ``sweep``: the VWAP of taking a USD notional from one side of a book, or why it cannot be filled.
- ``rolling``: O(1)-per-sample rolling window statistics (mean, σ, min/max, slope, crossings, drift).
- ``events``: the inputs (book, funding, spot) and adapters from the md.book/md.mark/md.indicators records.
- ``state``: parameters, the per-coin state fed in event-time order, and the feature records.
"""
