-- Traded volume per minute and exact price: what the web UI's volume profile sums, so a
-- whole day reads ~10^5 pre-grouped rows instead of every trade (millions). Rows hold each distinct
-- trade price, not a price level, so every level size the UI asks for (floor(price / step)) re-bins
-- them exactly; volumes are numeric sums of qty::numeric, which are exact and independent of the
-- order rows are added in (float sums are not), so the profile equals the same sums over `trades`.
--
-- Plain PostgreSQL: a table of partial sums that statement-level triggers on `trades` append to (its
-- NEW TABLE is the rows the statement really inserted: a redelivered batch's ON CONFLICT DO NOTHING
-- adds nothing), so the open minute is always in it too. A (minute, price) may have several rows:
-- readers sum them. Append-only on purpose: an upsert would lock the shared (minute, price) rows until
-- the writer commits, so one sink writer's waiting batch would hold back the others (the sink's
-- parallel writers must not wait on each other). A DELETE on `trades` appends the negated sums,
-- TRUNCATE empties the table, the retention that drops `trades` partitions deletes the same days here
-- (sinks.retention), and tapeflow_compact_trade_levels (the sink's hourly maintenance) merges a
-- range's partial rows into one per (minute, price) in one statement. Moving rows out of the DEFAULT
-- partition (0002) works on the partitions, where these statement triggers on the parent do not fire,
-- so it changes nothing here. Not partitioned: ~10^5 rows a day per busy symbol once compacted.
-- TimescaleDB: the table is replaced by a continuous aggregate with the same columns
-- (0021_trade_levels.timescale.sql); the triggers below are made on plain PostgreSQL only.
--
-- Trades stored before this migration: not summed here, in the migration's one transaction (a big
-- trades table would keep the sinks from writing, since CREATE TRIGGER locks trades until commit).
-- Their days are listed in trade_levels_backfill instead; the sink's maintenance fills one day per
-- transaction (tapeflow_backfill_trade_levels, sinks.trade_levels), and the UI reads `trades`
-- directly for a range that touches a day still listed, so the profile is exact meanwhile.

CREATE TABLE trade_levels_1m (
    exchange    text             NOT NULL,
    symbol      text             NOT NULL,
    open_time   timestamptz      NOT NULL,  -- the minute (date_bin from 2000-01-03, like the bars)
    price       double precision NOT NULL,  -- a traded price, exactly as stored in trades
    bought      numeric          NOT NULL,  -- sum(qty::numeric) of taker BUY trades
    sold        numeric          NOT NULL,  -- sum(qty::numeric) of taker SELL trades
    trade_count bigint           NOT NULL
);
CREATE INDEX trade_levels_1m_time_idx ON trade_levels_1m (exchange, symbol, open_time);
COMMENT ON TABLE trade_levels_1m IS
    'Taker bought/sold volume per minute and traded price, for the UI volume profile: kept by triggers on trades (plain PostgreSQL) or a continuous aggregate (TimescaleDB).';
COMMENT ON COLUMN trade_levels_1m.open_time IS 'The minute (date_bin from 2000-01-03 UTC, as the bars).';
COMMENT ON COLUMN trade_levels_1m.price IS 'A traded price exactly as stored in trades: any level step re-bins it (floor(price / step)).';
COMMENT ON COLUMN trade_levels_1m.bought IS 'sum(qty::numeric) of the taker BUY trades: exact, so re-binned sums equal sums over trades.';
COMMENT ON COLUMN trade_levels_1m.sold IS 'sum(qty::numeric) of the taker SELL trades.';

CREATE TABLE trade_levels_backfill (
    day date PRIMARY KEY  -- a UTC day of trades stored before migration 0021, not summed yet
);
COMMENT ON TABLE trade_levels_backfill IS
    'UTC days of trades stored before trade_levels_1m existed and not summed into it yet (the sink''s maintenance fills them one day per transaction; the UI reads trades for them meanwhile).';

DO $$
DECLARE
    part text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        CREATE FUNCTION tapeflow_trade_levels_insert() RETURNS trigger
        LANGUAGE plpgsql SET search_path = public, pg_temp AS $f$
        BEGIN
            INSERT INTO trade_levels_1m (exchange, symbol, open_time, price, bought, sold, trade_count)
            SELECT exchange, symbol, date_bin(INTERVAL '1 minute', trade_time, TIMESTAMPTZ '2000-01-03 00:00:00+00'),
                   price, sum(CASE WHEN taker_side = 'BUY' THEN qty::numeric ELSE 0 END),
                   sum(CASE WHEN taker_side = 'SELL' THEN qty::numeric ELSE 0 END), count(*)
            FROM new_trades GROUP BY 1, 2, 3, 4;
            RETURN NULL;
        END
        $f$;

        CREATE FUNCTION tapeflow_trade_levels_delete() RETURNS trigger
        LANGUAGE plpgsql SET search_path = public, pg_temp AS $f$
        BEGIN
            INSERT INTO trade_levels_1m (exchange, symbol, open_time, price, bought, sold, trade_count)
            SELECT exchange, symbol, date_bin(INTERVAL '1 minute', trade_time, TIMESTAMPTZ '2000-01-03 00:00:00+00'),
                   price, -sum(CASE WHEN taker_side = 'BUY' THEN qty::numeric ELSE 0 END),
                   -sum(CASE WHEN taker_side = 'SELL' THEN qty::numeric ELSE 0 END), -count(*)
            FROM old_trades GROUP BY 1, 2, 3, 4;
            RETURN NULL;
        END
        $f$;

        CREATE FUNCTION tapeflow_trade_levels_truncate() RETURNS trigger
        LANGUAGE plpgsql SET search_path = public, pg_temp AS $f$
        BEGIN
            TRUNCATE trade_levels_1m;
            RETURN NULL;
        END
        $f$;

        CREATE TRIGGER trades_levels_insert AFTER INSERT ON trades REFERENCING NEW TABLE AS new_trades
            FOR EACH STATEMENT EXECUTE FUNCTION tapeflow_trade_levels_insert();
        CREATE TRIGGER trades_levels_delete AFTER DELETE ON trades REFERENCING OLD TABLE AS old_trades
            FOR EACH STATEMENT EXECUTE FUNCTION tapeflow_trade_levels_delete();
        CREATE TRIGGER trades_levels_truncate AFTER TRUNCATE ON trades
            FOR EACH STATEMENT EXECUTE FUNCTION tapeflow_trade_levels_truncate();

        -- Merge the partial rows of [lo, hi) into one per (exchange, symbol, minute, price), dropping the
        -- ones whose trades were all deleted; keys already down to one row are read, not rewritten (an
        -- hourly pass over a busy day rewrites only what was appended since). One statement: readers
        -- see the sums before or after, equal. Rows appended meanwhile by the triggers are not in its
        -- snapshot and stay as they are. Returns the rows written. The advisory lock keeps it apart
        -- from a backfill of the same day (whose DELETE would not see the merged rows inserted
        -- concurrently, and its recomputation would count them twice).
        CREATE FUNCTION tapeflow_compact_trade_levels(lo timestamptz, hi timestamptz) RETURNS bigint
        LANGUAGE plpgsql SET search_path = public, pg_temp AS $g$
        DECLARE
            n bigint;
        BEGIN
            PERFORM pg_advisory_xact_lock(hashtext('tapeflow.trade_levels_1m'));
            WITH partial AS (SELECT exchange, symbol, open_time, price FROM trade_levels_1m
                             WHERE open_time >= lo AND open_time < hi
                             GROUP BY exchange, symbol, open_time, price HAVING count(*) > 1 OR sum(trade_count) = 0),
            gone AS (DELETE FROM trade_levels_1m l USING partial p
                     WHERE l.open_time >= lo AND l.open_time < hi AND l.exchange = p.exchange AND l.symbol = p.symbol
                       AND l.open_time = p.open_time AND l.price = p.price RETURNING l.*),
            merged AS (INSERT INTO trade_levels_1m (exchange, symbol, open_time, price, bought, sold, trade_count)
                       SELECT exchange, symbol, open_time, price, sum(bought), sum(sold), sum(trade_count) FROM gone
                       GROUP BY exchange, symbol, open_time, price HAVING sum(trade_count) <> 0 RETURNING 1)
            SELECT count(*) INTO n FROM merged;
            RETURN n;
        END
        $g$;

        -- Sum one listed day of trades (trade_levels_backfill) in the caller's transaction: the day's
        -- partitions (and DEFAULT's) are locked against writes, so a sink's insert into that day waits
        -- for this day only, and one that committed before is in both what is deleted (its trigger's
        -- rows) and what is recomputed (its trades). False when the day is not listed (done already).
        CREATE FUNCTION tapeflow_backfill_trade_levels(d date) RETURNS boolean
        LANGUAGE plpgsql SET search_path = public, pg_temp SET TimeZone = 'UTC' AS $bf$
        DECLARE
            lo timestamptz := d::timestamptz;
            hi timestamptz := d::timestamptz + INTERVAL '1 day';
            part text;
        BEGIN
            PERFORM pg_advisory_xact_lock(hashtext('tapeflow.trade_levels_1m'));
            IF NOT EXISTS (SELECT 1 FROM trade_levels_backfill WHERE day = d) THEN
                RETURN false;
            END IF;
            FOR part IN SELECT partition_name FROM tapeflow_partitions WHERE table_name = 'trades'
                        AND (is_default OR (range_start < hi AND range_end > lo)) ORDER BY partition_name LOOP
                EXECUTE format('LOCK TABLE %I IN SHARE MODE', part);
            END LOOP;
            DELETE FROM trade_levels_1m WHERE open_time >= lo AND open_time < hi;
            INSERT INTO trade_levels_1m (exchange, symbol, open_time, price, bought, sold, trade_count)
            SELECT exchange, symbol, date_bin(INTERVAL '1 minute', trade_time, TIMESTAMPTZ '2000-01-03 00:00:00+00'),
                   price, sum(CASE WHEN taker_side = 'BUY' THEN qty::numeric ELSE 0 END),
                   sum(CASE WHEN taker_side = 'SELL' THEN qty::numeric ELSE 0 END), count(*)
            FROM trades WHERE trade_time >= lo AND trade_time < hi GROUP BY 1, 2, 3, 4;
            DELETE FROM trade_levels_backfill WHERE day = d;
            RETURN true;
        END
        $bf$;

        -- the days of trades already stored (partitions holding a row, days in DEFAULT), summed later
        FOR part IN SELECT partition_name FROM tapeflow_partitions WHERE table_name = 'trades' AND NOT is_default LOOP
            EXECUTE format('INSERT INTO trade_levels_backfill (day) SELECT (trade_time AT TIME ZONE ''UTC'')::date '
                           'FROM (SELECT trade_time FROM %I LIMIT 1) AS t ON CONFLICT DO NOTHING', part);
        END LOOP;
        IF to_regclass('trades_default') IS NOT NULL THEN
            INSERT INTO trade_levels_backfill (day)
            SELECT DISTINCT (trade_time AT TIME ZONE 'UTC')::date FROM trades_default ON CONFLICT DO NOTHING;
        END IF;
    END IF;
END
$$;
