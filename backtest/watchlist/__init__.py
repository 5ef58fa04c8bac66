"""The watchlist backtest: recorded multi-venue sessions through the cross-venue
features, a ``kind: watchlist`` strategy and the hedged pair paper model, in process.

- ``synthetic``: a generated multi-venue session (``--source synthetic[:SEED]``).
- ``sources``: sessions from files (JSON lines of md.* records) or the generator.
- ``runner``: the backtest itself and its summary.
- ``cli``: ``tapeflow watchlist backtest`` and ``tapeflow watchlist fit``.
"""
