"""Topic catalogue, Avro schemas and their wire format: the contract every tapeflow process shares.

Modules, one job each:
- `catalogue`: every topic (key, partitions, retention, value schema) declared once.
- `avsc`: loading the committed `.avsc` files and the logical-type-free twin the serde compiles.
- `serde`: Confluent wire format (magic byte 0, 4-byte schema id, Avro body) with fastavro.
- `registry`: schema ids, from the committed `registry.json` (embedded mode) or a Confluent-compatible
  Schema Registry over HTTP; `python -m schemas.registry update|check`.
- `compatibility`: the backward-compatibility rule every schema change must pass.

Conventions kept across all `.avsc` files: namespace `tapeflow`; times are `long` epoch
milliseconds UTC with `logicalType: timestamp-millis` and names ending in `_time`; prices and
quantities are `double`; the same concept has the same field name everywhere (exchange, symbol,
event_time, receive_time, strategy, strategy_version, config_hash, signal_id, ...); a named type used by
several schemas (Side, Direction, Tier, TradingMode, PriceLevel) is defined identically in each.
Enum symbols that mirror the exchange are upper case (BUY/SELL, LONG/SHORT, order types and states);
tapeflow's own vocabularies are lower case, as they appear in configs and reports (tier, mode, leg,
liquidity, exit reasons). Optional fields are `["null", T]` unions with a `null` default.
"""
