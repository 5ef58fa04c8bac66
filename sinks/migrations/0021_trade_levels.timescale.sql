-- TimescaleDB branch of 0021_trade_levels.sql (which made the table but no triggers): the same columns
-- as a continuous aggregate of trades; materialized_only = false adds the minutes not materialized yet
-- (the open one) from trades at query time. Hypertables take no triggers with transition tables, and
-- the refresh policy is how TimescaleDB keeps such roll-ups; a trade arriving later than the policy's
-- start_offset (a day) stays out of its minute until that range is refreshed by hand
-- (CALL refresh_continuous_aggregate('trade_levels_1m', from, to)), as with cvd_1m; like the other
-- continuous aggregates it keeps its buckets when trades chunks are dropped (0003).
DROP TABLE trade_levels_1m;

CREATE MATERIALIZED VIEW trade_levels_1m
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT exchange,
       symbol,
       time_bucket(INTERVAL '1 minute', trade_time) AS open_time,
       price,
       sum(CASE WHEN taker_side = 'BUY' THEN qty::numeric ELSE 0 END) AS bought,
       sum(CASE WHEN taker_side = 'SELL' THEN qty::numeric ELSE 0 END) AS sold,
       count(*) AS trade_count
FROM trades
GROUP BY exchange, symbol, time_bucket(INTERVAL '1 minute', trade_time), price
WITH NO DATA;
COMMENT ON VIEW trade_levels_1m IS  -- a continuous aggregate is a view over its materialization
    'Taker bought/sold volume per minute and traded price, for the UI volume profile: kept by triggers on trades (plain PostgreSQL) or a continuous aggregate (TimescaleDB).';
SELECT add_continuous_aggregate_policy('trade_levels_1m', start_offset => INTERVAL '1 day',
                                       end_offset => INTERVAL '1 minute', schedule_interval => INTERVAL '1 minute');

-- Trades stored before this migration: the policy refreshes only its last day, so every day of the
-- trades chunks is listed for the sink's maintenance, which refreshes one day per call
-- (sinks.trade_levels.backfill_pending); the UI reads `trades` for a range touching a listed day.
INSERT INTO trade_levels_backfill (day)
SELECT DISTINCT (d AT TIME ZONE 'UTC')::date
FROM timescaledb_information.chunks c,
     generate_series(c.range_start, c.range_end - INTERVAL '1 microsecond', INTERVAL '1 day') AS d
WHERE c.hypertable_schema = 'public' AND c.hypertable_name = 'trades'
ON CONFLICT DO NOTHING;
