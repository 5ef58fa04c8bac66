"""The watchlist service: the cross-venue features of ``stream_apps.cross_venue``
run live on the md.* topics, published to ``xv.features`` (and stored by the sink in ``xv_features``).

Module map:
- ``records``: ``CoinFeatures`` -> xv.features records with deterministic ids (coin, eval time, pair).
- ``merge``: the event-time merge of every input partition (pure, no Kafka) and the offsets it has
  consumed exactly, so a checkpoint names the input its state has seen.
- ``service``: the Kafka process (`tapeflow cross-venue`): consumer group, checkpoints, health,
  metrics.
"""
