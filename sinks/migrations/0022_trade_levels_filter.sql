-- trade_levels_1m's statement triggers (0021) summed each side as sum(CASE WHEN taker_side = ... THEN
-- qty::numeric ELSE 0 END): two numeric additions per trade, one of them of a zero. With FILTER each
-- trade is cast once and added once, to its own side's sum; a side without trades in a group is 0 by
-- COALESCE, as the sum of zeros was (the same value and scale, so the rows are identical:
-- tests/sinks/test_trade_levels.py compares them with an independent recomputation as text).
-- Measured (/tmp script, 200k-row inserts, PostgreSQL's backend CPU per 1M trades, alternated, load ~2):
-- 0021 11.35-12.75 CPU-s, this 8.90-8.95, no trigger 8.65-8.85 (benchmarks/RESULTS.md, "The suite's CPU,
-- eighth session"). Plain PostgreSQL only: on TimescaleDB trade_levels_1m is a continuous aggregate and
-- these functions do not exist. CREATE OR REPLACE keeps the triggers bound to them.
DO $$
BEGIN
    IF to_regprocedure('tapeflow_trade_levels_insert()') IS NOT NULL THEN
        CREATE OR REPLACE FUNCTION tapeflow_trade_levels_insert() RETURNS trigger
        LANGUAGE plpgsql SET search_path = public, pg_temp AS $f$
        BEGIN
            INSERT INTO trade_levels_1m (exchange, symbol, open_time, price, bought, sold, trade_count)
            SELECT exchange, symbol, date_bin(INTERVAL '1 minute', trade_time, TIMESTAMPTZ '2000-01-03 00:00:00+00'),
                   price, coalesce(sum(q) FILTER (WHERE taker_side = 'BUY'), 0),
                   coalesce(sum(q) FILTER (WHERE taker_side = 'SELL'), 0), count(*)
            FROM (SELECT exchange, symbol, trade_time, price, taker_side, qty::numeric AS q FROM new_trades) AS t
            GROUP BY 1, 2, 3, 4;
            RETURN NULL;
        END
        $f$;

        CREATE OR REPLACE FUNCTION tapeflow_trade_levels_delete() RETURNS trigger
        LANGUAGE plpgsql SET search_path = public, pg_temp AS $f$
        BEGIN
            INSERT INTO trade_levels_1m (exchange, symbol, open_time, price, bought, sold, trade_count)
            SELECT exchange, symbol, date_bin(INTERVAL '1 minute', trade_time, TIMESTAMPTZ '2000-01-03 00:00:00+00'),
                   price, -coalesce(sum(q) FILTER (WHERE taker_side = 'BUY'), 0),
                   -coalesce(sum(q) FILTER (WHERE taker_side = 'SELL'), 0), -count(*)
            FROM (SELECT exchange, symbol, trade_time, price, taker_side, qty::numeric AS q FROM old_trades) AS t
            GROUP BY 1, 2, 3, 4;
            RETURN NULL;
        END
        $f$;
    END IF;
END
$$;
