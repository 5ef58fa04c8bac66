-- Market-data tables: one per md.* topic (md.trades, md.depth, md.book, md.liquidations, md.mark,
-- md.indicators, md.gaps) plus bars_1m (bars.1m) and the bar/CVD roll-ups Grafana reads.
--
-- Conventions for every tapeflow table:
-- * Column names are the Avro field names of the topic's record (sinks/tables.py maps records to
--   rows); order-book levels (arrays of {price, qty}) become parallel price and quantity arrays so
--   the best level is simply bid_prices[1].
-- * Times are timestamptz, converted by the sink from the records' Unix milliseconds.
-- * Market prices and quantities are double precision, not numeric: they arrive as IEEE doubles in
--   the Avro records, so numeric could not restore any exactness the stream did not carry; exchange
--   prices and sizes have at most ~10 significant digits, which a double holds and round-trips
--   exactly; and double is a fixed 8 bytes with hardware arithmetic, which matters for tables of
--   hundreds of millions of rows and for the sums in the roll-ups. Money that is accumulated and
--   reported (fees, P&L, balances) is numeric: see 0004.
-- * The natural key is the primary key. It includes the time column because both PostgreSQL
--   partitioning and TimescaleDB hypertables require every unique constraint to contain the
--   partitioning column. It still deduplicates: the exchange assigns an id and its time together,
--   once, so a redelivered record carries the same time as the original, lands in the same
--   partition/chunk and conflicts with it (sinks/audit.py checks the invariant: one time per id).
-- * Time-range scans use a BRIN index on the time column (tiny, and rows arrive in time order);
--   per-symbol lookups use the btree of the natural key, which leads with (exchange, symbol).
--
-- The tables are created as ordinary tables here. On plain PostgreSQL the DO block below turns them
-- into RANGE-partitioned tables (0002); on TimescaleDB 0003_market_data.timescale.sql turns them
-- into hypertables with compression and retention instead, and replaces the roll-up views with
-- continuous aggregates of the same columns.

CREATE TABLE trades (
    exchange       text             NOT NULL,
    symbol         text             NOT NULL,
    agg_id         bigint           NOT NULL,
    price          double precision NOT NULL,
    qty            double precision NOT NULL,
    first_trade_id bigint           NOT NULL,
    last_trade_id  bigint           NOT NULL,
    event_time     timestamptz      NOT NULL,
    trade_time     timestamptz      NOT NULL,
    receive_time   timestamptz      NOT NULL,
    taker_side     text             NOT NULL,
    -- an agg_id has exactly one trade_time, so this is unique on (exchange, symbol, agg_id)
    CONSTRAINT trades_pkey PRIMARY KEY (exchange, symbol, agg_id, trade_time)
);
COMMENT ON TABLE trades IS 'md.trades: aggregated trades; agg_id is consecutive per (exchange, symbol), a jump is a gap.';
COMMENT ON COLUMN trades.taker_side IS 'Aggressor side: BUY = taker bought (Binance m=false), SELL = taker sold.';
CREATE INDEX trades_trade_time_brin ON trades USING brin (trade_time);

CREATE TABLE depth_updates (
    exchange             text               NOT NULL,
    symbol               text               NOT NULL,
    first_update_id      bigint             NOT NULL,
    final_update_id      bigint             NOT NULL,
    prev_final_update_id bigint,
    event_time           timestamptz        NOT NULL,
    transaction_time     timestamptz        NOT NULL,
    receive_time         timestamptz        NOT NULL,
    bid_prices           double precision[] NOT NULL,
    bid_qtys             double precision[] NOT NULL,
    ask_prices           double precision[] NOT NULL,
    ask_qtys             double precision[] NOT NULL,
    -- a final update id is emitted once, with one event time
    CONSTRAINT depth_updates_pkey PRIMARY KEY (exchange, symbol, final_update_id, event_time)
);
COMMENT ON TABLE depth_updates IS 'md.depth: verified order-book diffs; qty is the new absolute size at the price, 0 removes the level.';
CREATE INDEX depth_updates_event_time_brin ON depth_updates USING brin (event_time);

CREATE TABLE depth_snapshots (
    exchange       text               NOT NULL,
    symbol         text               NOT NULL,
    last_update_id bigint             NOT NULL,
    event_time     timestamptz        NOT NULL,
    receive_time   timestamptz        NOT NULL,
    bid_prices     double precision[] NOT NULL,
    bid_qtys       double precision[] NOT NULL,
    ask_prices     double precision[] NOT NULL,
    ask_qtys       double precision[] NOT NULL,
    obi_10         double precision   NOT NULL,
    -- the book after update id u is one state with one event time: two samples taken without a
    -- diff in between are the same snapshot and are stored once
    CONSTRAINT depth_snapshots_pkey PRIMARY KEY (exchange, symbol, last_update_id, event_time)
);
COMMENT ON TABLE depth_snapshots IS 'md.book: sampled top-N book (best first) with OBI over 10 levels.';
CREATE INDEX depth_snapshots_event_time_brin ON depth_snapshots USING brin (event_time);

CREATE TABLE liquidations (
    exchange        text             NOT NULL,
    symbol          text             NOT NULL,
    side            text             NOT NULL,
    liquidated_side text             NOT NULL,
    price           double precision NOT NULL,
    avg_price       double precision NOT NULL,
    qty             double precision NOT NULL,
    filled_qty      double precision NOT NULL,
    usd_value       double precision NOT NULL,
    event_time      timestamptz      NOT NULL,
    trade_time      timestamptz      NOT NULL,
    receive_time    timestamptz      NOT NULL,
    -- liquidation orders carry no id; Binance pushes at most one per symbol per second, so the
    -- order's own content is its identity (a row equal in all of these is the same order)
    CONSTRAINT liquidations_pkey PRIMARY KEY (exchange, symbol, trade_time, side, price, qty)
);
COMMENT ON TABLE liquidations IS 'md.liquidations: forced orders; side BUY liquidated a SHORT, SELL a LONG; usd_value = avg_price * filled_qty.';
CREATE INDEX liquidations_trade_time_brin ON liquidations USING brin (trade_time);

CREATE TABLE mark_prices (
    exchange          text             NOT NULL,
    symbol            text             NOT NULL,
    mark_price        double precision NOT NULL,
    index_price       double precision NOT NULL,
    funding_rate      double precision NOT NULL,
    next_funding_time timestamptz      NOT NULL,
    event_time        timestamptz      NOT NULL,
    receive_time      timestamptz      NOT NULL,
    CONSTRAINT mark_prices_pkey PRIMARY KEY (exchange, symbol, event_time)
);
COMMENT ON TABLE mark_prices IS 'md.mark: mark/index price and funding rate (fraction per funding interval).';
CREATE INDEX mark_prices_event_time_brin ON mark_prices USING brin (event_time);

CREATE TABLE market_indicators (
    exchange     text             NOT NULL,
    symbol       text             NOT NULL,
    kind         text             NOT NULL,
    value        double precision NOT NULL,
    period       text,
    extra        jsonb            NOT NULL DEFAULT '{}',
    event_time   timestamptz      NOT NULL,
    receive_time timestamptz      NOT NULL,
    CONSTRAINT market_indicators_pkey PRIMARY KEY (exchange, symbol, kind, event_time)
);
COMMENT ON TABLE market_indicators IS 'md.indicators: polled OI, long/short ratios, premiums; latest per (symbol, kind) is the current value.';
CREATE INDEX market_indicators_event_time_brin ON market_indicators USING brin (event_time);

CREATE TABLE bars_1m (
    exchange     text             NOT NULL,
    symbol       text             NOT NULL,
    open_time    timestamptz      NOT NULL,
    close_time   timestamptz      NOT NULL,
    open         double precision NOT NULL,
    high         double precision NOT NULL,
    low          double precision NOT NULL,
    close        double precision NOT NULL,
    volume       double precision NOT NULL,
    buy_volume   double precision NOT NULL,
    sell_volume  double precision NOT NULL,
    quote_volume double precision NOT NULL,
    vwap         double precision NOT NULL,
    trade_count  bigint           NOT NULL,
    first_agg_id bigint           NOT NULL,
    last_agg_id  bigint           NOT NULL,
    CONSTRAINT bars_1m_pkey PRIMARY KEY (exchange, symbol, open_time)
);
COMMENT ON TABLE bars_1m IS 'bars.1m: closed 1-minute bars with taker buy/sell volume.';
CREATE INDEX bars_1m_open_time_brin ON bars_1m USING brin (open_time);

-- Small and not time-series: an ordinary table on both engines.
CREATE TABLE data_gaps (
    exchange      text        NOT NULL,
    symbol        text        NOT NULL,
    stream        text        NOT NULL,
    from_id       bigint      NOT NULL,
    to_id         bigint      NOT NULL,
    detected_time timestamptz NOT NULL,
    reason        text        NOT NULL,
    CONSTRAINT data_gaps_pkey PRIMARY KEY (exchange, symbol, stream, from_id, to_id)
);
COMMENT ON TABLE data_gaps IS 'md.gaps: id ranges (inclusive) the producer could not fill; audits mark such gaps as known.';
CREATE INDEX data_gaps_detected_time_idx ON data_gaps (detected_time);

-- Plain PostgreSQL: partition. Daily for the high-volume streams (millions of rows a day: small
-- partitions keep indexes hot and make retention a DROP), monthly for the rest.
-- Keep in step with sinks/partitions.py PLANS (tests compare them).
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        PERFORM tapeflow_partition_table('trades', 'trade_time', 'day', 3);
        PERFORM tapeflow_partition_table('depth_updates', 'event_time', 'day', 3);
        PERFORM tapeflow_partition_table('depth_snapshots', 'event_time', 'day', 3);
        PERFORM tapeflow_partition_table('liquidations', 'trade_time', 'month', 1);
        PERFORM tapeflow_partition_table('mark_prices', 'event_time', 'month', 1);
        PERFORM tapeflow_partition_table('market_indicators', 'event_time', 'month', 1);
        PERFORM tapeflow_partition_table('bars_1m', 'open_time', 'month', 1);
    END IF;
END
$$;

-- Roll-ups. On TimescaleDB these views are replaced by continuous aggregates with the same
-- columns (0003_market_data.timescale.sql); bucket origin 2000-01-03 UTC is time_bucket's, so both
-- engines put a bar in the same bucket. Open/close are the first/last 1m bar's.
CREATE VIEW bars_5m AS
SELECT exchange,
       symbol,
       date_bin(INTERVAL '5 minutes', open_time, TIMESTAMPTZ '2000-01-03 00:00:00+00') AS open_time,
       (array_agg(open ORDER BY open_time))[1] AS open,
       max(high) AS high,
       min(low) AS low,
       (array_agg(close ORDER BY open_time DESC))[1] AS close,
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
GROUP BY exchange, symbol, date_bin(INTERVAL '5 minutes', open_time, TIMESTAMPTZ '2000-01-03 00:00:00+00');

CREATE VIEW bars_1h AS
SELECT exchange,
       symbol,
       date_bin(INTERVAL '1 hour', open_time, TIMESTAMPTZ '2000-01-03 00:00:00+00') AS open_time,
       (array_agg(open ORDER BY open_time))[1] AS open,
       max(high) AS high,
       min(low) AS low,
       (array_agg(close ORDER BY open_time DESC))[1] AS close,
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
GROUP BY exchange, symbol, date_bin(INTERVAL '1 hour', open_time, TIMESTAMPTZ '2000-01-03 00:00:00+00');

-- Per-minute taker flow; CVD over a window is sum(delta_qty) over its minutes. On plain PostgreSQL
-- it reads bars_1m, which carries exactly these per-minute sums: a view grouping raw trades by
-- minute could not be pruned by a time filter (the filter applies to the bucket expression, not to
-- trade_time) and would scan every trades partition on each query. TimescaleDB computes it from
-- trades incrementally (continuous aggregate), which also cross-checks the bar builder.
CREATE VIEW cvd_1m AS
SELECT exchange,
       symbol,
       open_time,
       buy_volume AS buy_qty,
       sell_volume AS sell_qty,
       buy_volume - sell_volume AS delta_qty,
       trade_count
FROM bars_1m;
