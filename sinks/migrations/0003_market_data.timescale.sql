-- TimescaleDB branch of 0003_market_data.sql (runs after it, only when the extension exists; the
-- plain file then left the tables unpartitioned). Turns the market tables into hypertables with
-- compression and retention, and replaces the roll-up views with continuous aggregates that have
-- the same columns, so every query works unchanged on both engines.
--
-- Compression: segments by (exchange, symbol) so per-symbol scans decompress only their segment;
-- every primary-key column is a segmentby or orderby column, which TimescaleDB needs to keep
-- enforcing the key (ON CONFLICT DO NOTHING) on compressed chunks. Retention mirrors
-- sinks/partitions.py PLANS (tests compare them): raw depth is kept briefly, trades 90 days
-- (history beyond that comes from Binance Vision), bars, liquidations and indicators forever;
-- continuous aggregates keep their buckets when raw chunks are dropped.

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_class WHERE oid = to_regclass('trades') AND relkind = 'p') THEN
        RAISE EXCEPTION 'tapeflow: the market tables were created as plain partitioned tables before TimescaleDB was installed'
            USING HINT = 'Keep plain partitioning (DROP EXTENSION timescaledb) or move the data into a fresh database created with TimescaleDB.';
    END IF;
END
$$;

DROP VIEW cvd_1m;
DROP VIEW bars_1h;
DROP VIEW bars_5m;

SELECT create_hypertable('trades', 'trade_time', chunk_time_interval => INTERVAL '1 day', create_default_indexes => false);
ALTER TABLE trades SET (timescaledb.compress,
                        timescaledb.compress_segmentby = 'exchange, symbol',
                        timescaledb.compress_orderby = 'agg_id, trade_time');
SELECT add_compression_policy('trades', INTERVAL '1 day');
SELECT add_retention_policy('trades', INTERVAL '90 days');

SELECT create_hypertable('depth_updates', 'event_time', chunk_time_interval => INTERVAL '1 day', create_default_indexes => false);
ALTER TABLE depth_updates SET (timescaledb.compress,
                               timescaledb.compress_segmentby = 'exchange, symbol',
                               timescaledb.compress_orderby = 'final_update_id, event_time');
SELECT add_compression_policy('depth_updates', INTERVAL '1 day');
SELECT add_retention_policy('depth_updates', INTERVAL '7 days');

SELECT create_hypertable('depth_snapshots', 'event_time', chunk_time_interval => INTERVAL '1 day', create_default_indexes => false);
ALTER TABLE depth_snapshots SET (timescaledb.compress,
                                 timescaledb.compress_segmentby = 'exchange, symbol',
                                 timescaledb.compress_orderby = 'last_update_id, event_time');
SELECT add_compression_policy('depth_snapshots', INTERVAL '1 day');
SELECT add_retention_policy('depth_snapshots', INTERVAL '30 days');

SELECT create_hypertable('liquidations', 'trade_time', chunk_time_interval => INTERVAL '30 days', create_default_indexes => false);
ALTER TABLE liquidations SET (timescaledb.compress,
                              timescaledb.compress_segmentby = 'exchange, symbol',
                              timescaledb.compress_orderby = 'trade_time, side, price, qty');
SELECT add_compression_policy('liquidations', INTERVAL '30 days');

SELECT create_hypertable('mark_prices', 'event_time', chunk_time_interval => INTERVAL '7 days', create_default_indexes => false);
ALTER TABLE mark_prices SET (timescaledb.compress,
                             timescaledb.compress_segmentby = 'exchange, symbol',
                             timescaledb.compress_orderby = 'event_time');
SELECT add_compression_policy('mark_prices', INTERVAL '7 days');
SELECT add_retention_policy('mark_prices', INTERVAL '365 days');

SELECT create_hypertable('market_indicators', 'event_time', chunk_time_interval => INTERVAL '30 days', create_default_indexes => false);
ALTER TABLE market_indicators SET (timescaledb.compress,
                                   timescaledb.compress_segmentby = 'exchange, symbol, kind',
                                   timescaledb.compress_orderby = 'event_time');
SELECT add_compression_policy('market_indicators', INTERVAL '30 days');

SELECT create_hypertable('bars_1m', 'open_time', chunk_time_interval => INTERVAL '30 days', create_default_indexes => false);
ALTER TABLE bars_1m SET (timescaledb.compress,
                         timescaledb.compress_segmentby = 'exchange, symbol',
                         timescaledb.compress_orderby = 'open_time');
SELECT add_compression_policy('bars_1m', INTERVAL '30 days');

-- Continuous aggregates: created empty (WITH NO DATA is required inside the migration's
-- transaction), filled by their refresh policies; materialized_only = false adds the not yet
-- materialized recent buckets at query time, so results match the plain views.
CREATE MATERIALIZED VIEW bars_5m
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT exchange,
       symbol,
       time_bucket(INTERVAL '5 minutes', open_time) AS open_time,
       first(open, open_time) AS open,
       max(high) AS high,
       min(low) AS low,
       last(close, open_time) AS close,
       sum(volume) AS volume,
       sum(buy_volume) AS buy_volume,
       sum(sell_volume) AS sell_volume,
       sum(quote_volume) AS quote_volume,
       sum(quote_volume) / nullif(sum(volume), 0) AS vwap,
       sum(trade_count)::bigint AS trade_count,
       min(first_agg_id) AS first_agg_id,
       max(last_agg_id) AS last_agg_id,
       count(*) AS bar_count
FROM bars_1m
GROUP BY exchange, symbol, time_bucket(INTERVAL '5 minutes', open_time)
WITH NO DATA;
SELECT add_continuous_aggregate_policy('bars_5m', start_offset => INTERVAL '1 day',
                                       end_offset => INTERVAL '5 minutes', schedule_interval => INTERVAL '5 minutes');

CREATE MATERIALIZED VIEW bars_1h
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT exchange,
       symbol,
       time_bucket(INTERVAL '1 hour', open_time) AS open_time,
       first(open, open_time) AS open,
       max(high) AS high,
       min(low) AS low,
       last(close, open_time) AS close,
       sum(volume) AS volume,
       sum(buy_volume) AS buy_volume,
       sum(sell_volume) AS sell_volume,
       sum(quote_volume) AS quote_volume,
       sum(quote_volume) / nullif(sum(volume), 0) AS vwap,
       sum(trade_count)::bigint AS trade_count,
       min(first_agg_id) AS first_agg_id,
       max(last_agg_id) AS last_agg_id,
       count(*) AS bar_count
FROM bars_1m
GROUP BY exchange, symbol, time_bucket(INTERVAL '1 hour', open_time)
WITH NO DATA;
SELECT add_continuous_aggregate_policy('bars_1h', start_offset => INTERVAL '3 days',
                                       end_offset => INTERVAL '1 hour', schedule_interval => INTERVAL '30 minutes');

-- From raw trades (independent of the bar builder; the plain view reads bars_1m).
CREATE MATERIALIZED VIEW cvd_1m
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT exchange,
       symbol,
       time_bucket(INTERVAL '1 minute', trade_time) AS open_time,
       sum(CASE WHEN taker_side = 'BUY' THEN qty ELSE 0 END) AS buy_qty,
       sum(CASE WHEN taker_side = 'SELL' THEN qty ELSE 0 END) AS sell_qty,
       sum(CASE WHEN taker_side = 'BUY' THEN qty ELSE -qty END) AS delta_qty,
       count(*) AS trade_count
FROM trades
GROUP BY exchange, symbol, time_bucket(INTERVAL '1 minute', trade_time)
WITH NO DATA;
SELECT add_continuous_aggregate_policy('cvd_1m', start_offset => INTERVAL '2 hours',
                                       end_offset => INTERVAL '1 minute', schedule_interval => INTERVAL '1 minute');
