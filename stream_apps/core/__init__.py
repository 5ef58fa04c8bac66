"""Pure engine core of tapeflow: windows, indicators, scoring, cooldown, exits.

Why a separate package: the same functions are driven by Faust agents (live, from Kafka) and by the
backtest runner (replay), and a parity test requires identical signals from both. So nothing in here
imports Kafka or Faust, nothing reads the wall clock (every function takes event times in Unix ms),
all state is plain serialisable data (``to_dict``/``from_dict``) with bounded size (bucketed
aggregates, never per-trade lists), and results do not depend on how the input was batched.

Module map:
- ``units``, ``durations``, ``params``: fixed-point scales, "30m"-style durations, per-symbol parameters.
- ``events``: normalised inputs (columnar ``TradeBatch``; book, mark, liquidation, indicator records).
- ``ring``, ``quantiles``, ``bars``, ``atr``: the bounded building blocks.
- ``symbol_state`` (+ ``market_records``): per-symbol state and immutable ``Features`` snapshots.
- ``detectors``: VPIN, Kyle's lambda and Amihud, CVD–price divergence, OI spikes, liquidation
  windows, order-book walls and iceberg refills per symbol (compiled where hot, incremental; on when a
  strategy has a ``detectors`` section).
- ``strategy``, ``scoring``, ``decision``, ``cooldown``, ``exits``: strategy files and the signal model.
- ``engine`` (+ ``records``): cadence, per-symbol states, per-strategy cooldown, Avro-shaped records.
- ``synthetic``: deterministic synthetic trades for tests and benchmarks.
"""
