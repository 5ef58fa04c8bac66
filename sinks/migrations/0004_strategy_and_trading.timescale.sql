-- TimescaleDB branch of 0004_strategy_and_trading.sql: features becomes a hypertable (the plain
-- file left it unpartitioned). The trading ledgers stay ordinary tables on both engines.
-- Kept without retention: fitting weights needs long histories (about 25M rows a year at four
-- symbols and a few strategies); compression makes that cheap.

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_class WHERE oid = to_regclass('features') AND relkind = 'p') THEN
        RAISE EXCEPTION 'tapeflow: features was created as a plain partitioned table before TimescaleDB was installed'
            USING HINT = 'Keep plain partitioning (DROP EXTENSION timescaledb) or move the data into a fresh database created with TimescaleDB.';
    END IF;
END
$$;

SELECT create_hypertable('features', 'eval_time', chunk_time_interval => INTERVAL '7 days', create_default_indexes => false);
ALTER TABLE features SET (timescaledb.compress,
                          timescaledb.compress_segmentby = 'exchange, symbol, strategy',
                          timescaledb.compress_orderby = 'eval_time, evaluation_id');
SELECT add_compression_policy('features', INTERVAL '30 days');
