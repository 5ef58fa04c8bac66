"""The engine as a Faust worker: ``md.*`` topics in, ``bars.1m``, ``features`` and ``signals`` out.

Module map (Kafka-free first, Faust last):
- ``config``: ``EngineAppConfig``, every knob of a worker (pydantic, JSON across processes).
- ``inputs``: raw records of one partition → trades and market events per ``exchange:symbol``.
- ``alignment``: holds inputs until the other ``md.*`` topics have caught up in event time.
- ``keyed_engine``: the engine core for one symbol plus the input offsets its state contains.
- ``outputs``: engine results → Avro records, deterministic keys, partitions and timestamps.
- ``processor``: one fetch in, the ordered Kafka effects out (outputs, snapshots, acks).
- ``metrics``: Prometheus metrics of the worker.
- ``bulk_consumer``: Faust consumer delivering the input partitions' fetches in bulk.
- ``app``: the Faust app (state table, effects in their safe order, exactly-once routing).
- ``worker``: process entry (topics, HTTP endpoint, signals); ``session``: synthetic md.* sessions.
"""
