-- TimescaleDB branch of 0014_cross_venue_features.sql: xv_features becomes a hypertable (the plain
-- file left it unpartitioned), compressed per coin and venue pair; the compression interval and the
-- retention follow sinks.retention (apply_compression, tapeflow_drop_chunks_before).

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_class WHERE oid = to_regclass('xv_features') AND relkind = 'p') THEN
        RAISE EXCEPTION 'tapeflow: xv_features was created as a plain partitioned table before TimescaleDB was installed'
            USING HINT = 'Keep plain partitioning (DROP EXTENSION timescaledb) or move the data into a fresh database created with TimescaleDB.';
    END IF;
END
$$;

SELECT create_hypertable('xv_features', 'eval_time', chunk_time_interval => INTERVAL '7 days', create_default_indexes => false);
ALTER TABLE xv_features SET (timescaledb.compress,
                             timescaledb.compress_segmentby = 'coin, sell_venue, buy_venue',
                             timescaledb.compress_orderby = 'eval_time, feature_id');
SELECT add_compression_policy('xv_features', INTERVAL '7 days');
