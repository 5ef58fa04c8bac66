-- TimescaleDB branch of 0017_watchlist_trading.sql: the four watchlist tables become hypertables (the
-- plain file left them unpartitioned), compressed per coin; chunks of 30 days (a few thousand rows a
-- month) and compression a month on (sinks.retention: a pair's legs, funding and state keep arriving
-- while it is open); the retention follows sinks.retention (apply_compression, tapeflow_drop_chunks_before).

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['xv_signals', 'xv_leg_orders', 'xv_funding_payments', 'xv_pair_events'] LOOP
        IF EXISTS (SELECT 1 FROM pg_class WHERE oid = to_regclass(t) AND relkind = 'p') THEN
            RAISE EXCEPTION 'tapeflow: % was created as a plain partitioned table before TimescaleDB was installed', t
                USING HINT = 'Keep plain partitioning (DROP EXTENSION timescaledb) or move the data into a fresh database created with TimescaleDB.';
        END IF;
    END LOOP;
END
$$;

SELECT create_hypertable('xv_signals', 'eval_time', chunk_time_interval => INTERVAL '30 days', create_default_indexes => false);
ALTER TABLE xv_signals SET (timescaledb.compress,
                            timescaledb.compress_segmentby = 'coin',
                            timescaledb.compress_orderby = 'eval_time, signal_id');
SELECT add_compression_policy('xv_signals', INTERVAL '30 days');

SELECT create_hypertable('xv_leg_orders', 'order_time', chunk_time_interval => INTERVAL '30 days', create_default_indexes => false);
ALTER TABLE xv_leg_orders SET (timescaledb.compress,
                               timescaledb.compress_segmentby = 'coin',
                               timescaledb.compress_orderby = 'order_time, client_order_id');
SELECT add_compression_policy('xv_leg_orders', INTERVAL '30 days');

SELECT create_hypertable('xv_funding_payments', 'funding_time', chunk_time_interval => INTERVAL '30 days', create_default_indexes => false);
ALTER TABLE xv_funding_payments SET (timescaledb.compress,
                                     timescaledb.compress_segmentby = 'coin',
                                     timescaledb.compress_orderby = 'funding_time, pair_id, leg');
SELECT add_compression_policy('xv_funding_payments', INTERVAL '30 days');

SELECT create_hypertable('xv_pair_events', 'event_time', chunk_time_interval => INTERVAL '30 days', create_default_indexes => false);
ALTER TABLE xv_pair_events SET (timescaledb.compress,
                                timescaledb.compress_segmentby = 'coin',
                                timescaledb.compress_orderby = 'event_time, pair_id, seq');
SELECT add_compression_policy('xv_pair_events', INTERVAL '30 days');
