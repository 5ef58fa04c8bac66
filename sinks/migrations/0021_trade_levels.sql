-- Traded volume per minute and exact price (issue 36): what the web UI's volume profile sums, so a
-- whole day reads ~10^5 pre-grouped rows instead of every trade (millions). Rows hold each distinct
-- trade price, not a price level, so every level size the UI asks for (floor(price / step)) re-bins
-- them exactly; volumes are numeric sums of qty::numeric, which are exact and independent of the
-- order rows are added in (float sums are not), so the profile equals the same sums over `trades`.
--
-- Plain PostgreSQL: a table kept current by a statement-level trigger on `trades` (its NEW TABLE is
-- the rows the statement really inserted: a redelivered batch's ON CONFLICT DO NOTHING adds nothing),
-- so the open minute is always in it too; a DELETE on `trades` subtracts, TRUNCATE empties it, and the
-- retention that drops `trades` partitions deletes the same days here (sinks.retention). Moving rows
-- out of the DEFAULT partition (0002) works on the partitions, where these statement triggers on the
-- parent do not fire, so it changes nothing here. Not partitioned: ~10^5 rows a day per busy symbol.
-- TimescaleDB: the table is replaced by a continuous aggregate with the same columns
-- (0021_trade_levels.timescale.sql); the triggers below are made on plain PostgreSQL only.

CREATE TABLE trade_levels_1m (
    exchange    text             NOT NULL,
    symbol      text             NOT NULL,
    open_time   timestamptz      NOT NULL,  -- the minute (date_bin from 2000-01-03, like the bars)
    price       double precision NOT NULL,  -- a traded price, exactly as stored in trades
    bought      numeric          NOT NULL,  -- sum(qty::numeric) of taker BUY trades
    sold        numeric          NOT NULL,  -- sum(qty::numeric) of taker SELL trades
    trade_count bigint           NOT NULL,
    CONSTRAINT trade_levels_1m_pkey PRIMARY KEY (exchange, symbol, open_time, price)
);
COMMENT ON TABLE trade_levels_1m IS
    'Taker bought/sold volume per minute and traded price, for the UI volume profile: kept by triggers on trades (plain PostgreSQL) or a continuous aggregate (TimescaleDB).';
COMMENT ON COLUMN trade_levels_1m.open_time IS 'The minute (date_bin from 2000-01-03 UTC, as the bars).';
COMMENT ON COLUMN trade_levels_1m.price IS 'A traded price exactly as stored in trades: any level step re-bins it (floor(price / step)).';
COMMENT ON COLUMN trade_levels_1m.bought IS 'sum(qty::numeric) of the taker BUY trades: exact, so re-binned sums equal sums over trades.';
COMMENT ON COLUMN trade_levels_1m.sold IS 'sum(qty::numeric) of the taker SELL trades.';

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        CREATE FUNCTION tapeflow_trade_levels_insert() RETURNS trigger
        LANGUAGE plpgsql SET search_path = public, pg_temp AS $f$
        BEGIN
            -- ordered by key, so concurrent writers lock shared rows in the same order (no deadlock)
            INSERT INTO trade_levels_1m AS l (exchange, symbol, open_time, price, bought, sold, trade_count)
            SELECT exchange, symbol, date_bin(INTERVAL '1 minute', trade_time, TIMESTAMPTZ '2000-01-03 00:00:00+00'),
                   price, sum(CASE WHEN taker_side = 'BUY' THEN qty::numeric ELSE 0 END),
                   sum(CASE WHEN taker_side = 'SELL' THEN qty::numeric ELSE 0 END), count(*)
            FROM new_trades GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
            ON CONFLICT (exchange, symbol, open_time, price) DO UPDATE
                SET bought = l.bought + excluded.bought, sold = l.sold + excluded.sold,
                    trade_count = l.trade_count + excluded.trade_count;
            RETURN NULL;
        END
        $f$;

        CREATE FUNCTION tapeflow_trade_levels_delete() RETURNS trigger
        LANGUAGE plpgsql SET search_path = public, pg_temp AS $f$
        BEGIN
            WITH gone AS (
                SELECT exchange, symbol, date_bin(INTERVAL '1 minute', trade_time, TIMESTAMPTZ '2000-01-03 00:00:00+00') AS open_time,
                       price, sum(CASE WHEN taker_side = 'BUY' THEN qty::numeric ELSE 0 END) AS bought,
                       sum(CASE WHEN taker_side = 'SELL' THEN qty::numeric ELSE 0 END) AS sold, count(*) AS n
                FROM old_trades GROUP BY 1, 2, 3, 4)
            UPDATE trade_levels_1m l SET bought = l.bought - g.bought, sold = l.sold - g.sold,
                                         trade_count = l.trade_count - g.n
            FROM gone g WHERE (l.exchange, l.symbol, l.open_time, l.price) = (g.exchange, g.symbol, g.open_time, g.price);
            DELETE FROM trade_levels_1m WHERE trade_count <= 0;
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

        -- the trades already stored
        INSERT INTO trade_levels_1m (exchange, symbol, open_time, price, bought, sold, trade_count)
        SELECT exchange, symbol, date_bin(INTERVAL '1 minute', trade_time, TIMESTAMPTZ '2000-01-03 00:00:00+00'),
               price, sum(CASE WHEN taker_side = 'BUY' THEN qty::numeric ELSE 0 END),
               sum(CASE WHEN taker_side = 'SELL' THEN qty::numeric ELSE 0 END), count(*)
        FROM trades GROUP BY 1, 2, 3, 4;
    END IF;
END
$$;
