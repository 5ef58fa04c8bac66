-- The watchlist's trading records: what the watchlist trading service publishes on
-- xv.signals, xv.orders, xv.funding and xv.pairs, stored by the sink like xv_features (0014). Conventions
-- as in 0004: prices, quantities and spreads are double precision, money (fees, slippage, funding, P&L)
-- numeric, times timestamptz (the records' *_ms fields become *_time columns). Each primary key is the
-- record's natural key plus its time, so a re-delivered or re-published record is the same key and the
-- sink's ON CONFLICT DO NOTHING keeps one row. Monthly partitions on plain PostgreSQL, hypertables on
-- TimescaleDB (the .timescale.sql file); kept forever by default (sinks/retention.py).

CREATE TABLE xv_signals (
    signal_id        text             NOT NULL,
    strategy         text             NOT NULL,
    strategy_version text             NOT NULL,
    config_hash      text             NOT NULL,
    coin             text             NOT NULL,
    eval_time        timestamptz      NOT NULL,
    sell_venue       text             NOT NULL,
    buy_venue        text             NOT NULL,
    sell_symbol      text,
    buy_symbol       text,
    notional_usd     double precision NOT NULL,
    status           text             NOT NULL,  -- signal | rejected
    reason           text,
    z_1h             double precision,
    spread_sweep     double precision,
    net_spread       double precision,
    funding_diff_8h  double precision,
    entry_spread     double precision,
    entry_net_spread double precision,
    entry_sell_vwap  double precision,
    entry_buy_vwap   double precision,
    expected_pnl     double precision,
    win_prob         double precision,
    imputed          jsonb            NOT NULL,
    feature_id       text,
    CONSTRAINT xv_signals_pkey PRIMARY KEY (signal_id, eval_time)
);
COMMENT ON TABLE xv_signals IS 'xv_signals: watchlist strategy decisions per coin and ordered venue pair (signal or rejected with the reason), from xv.signals.';
CREATE INDEX xv_signals_coin_time_idx ON xv_signals (coin, eval_time);
CREATE INDEX xv_signals_eval_time_brin ON xv_signals USING brin (eval_time);

CREATE TABLE xv_leg_orders (
    client_order_id text             NOT NULL,
    pair_id         text             NOT NULL,
    signal_id       text             NOT NULL,
    coin            text             NOT NULL,
    leg             text             NOT NULL,  -- short | long
    action          text             NOT NULL,  -- entry | exit | unwind
    venue           text             NOT NULL,
    symbol          text             NOT NULL,
    side            text             NOT NULL,  -- BUY | SELL
    qty             double precision NOT NULL,
    avg_price       double precision,
    top_price       double precision,
    fee             numeric          NOT NULL,
    slippage_usd    numeric          NOT NULL,
    status          text             NOT NULL,  -- FILLED | FAILED
    reason          text,
    order_time      timestamptz      NOT NULL,  -- the record's time_ms
    book_time       timestamptz,                -- the record's book_time_ms
    CONSTRAINT xv_leg_orders_pkey PRIMARY KEY (client_order_id, order_time)
);
COMMENT ON TABLE xv_leg_orders IS 'xv_leg_orders: leg orders of hedged pairs (entry, exit, unwind) with their fill or failure, from xv.orders.';
CREATE INDEX xv_leg_orders_pair_idx ON xv_leg_orders (pair_id, order_time);
CREATE INDEX xv_leg_orders_coin_time_idx ON xv_leg_orders (coin, order_time);
CREATE INDEX xv_leg_orders_order_time_brin ON xv_leg_orders USING brin (order_time);

CREATE TABLE xv_funding_payments (
    pair_id      text             NOT NULL,
    coin         text             NOT NULL,
    leg          text             NOT NULL,  -- short | long
    venue        text             NOT NULL,
    symbol       text             NOT NULL,
    funding_time timestamptz      NOT NULL,  -- the record's funding_time_ms
    rate         double precision NOT NULL,
    mark_price   double precision NOT NULL,
    qty          double precision NOT NULL,
    paid         numeric          NOT NULL,  -- quote currency; negative = received
    CONSTRAINT xv_funding_payments_pkey PRIMARY KEY (pair_id, leg, funding_time)
);
COMMENT ON TABLE xv_funding_payments IS 'xv_funding_payments: funding paid (or received, negative) by the legs of hedged pairs, from xv.funding.';
CREATE INDEX xv_funding_payments_coin_time_idx ON xv_funding_payments (coin, funding_time);
CREATE INDEX xv_funding_payments_funding_time_brin ON xv_funding_payments USING brin (funding_time);

CREATE TABLE xv_pair_events (
    pair_id            text             NOT NULL,
    seq                bigint           NOT NULL,
    event_time         timestamptz      NOT NULL,
    signal_id          text             NOT NULL,
    pair_key           text             NOT NULL,
    coin               text             NOT NULL,
    short_venue        text             NOT NULL,
    short_symbol       text             NOT NULL,
    long_venue         text             NOT NULL,
    long_symbol        text             NOT NULL,
    notional_usd       double precision NOT NULL,
    qty                double precision NOT NULL,
    status             text             NOT NULL,  -- opening | open | unwinding | failed | closed | rejected
    reason             text,
    close_reason       text,
    opened_time        timestamptz      NOT NULL,  -- the record's opened_ms
    closed_time        timestamptz,                -- the record's closed_ms
    entry_spread       double precision,
    exit_spread        double precision,
    gross_usd          numeric          NOT NULL,
    fees_usd           numeric          NOT NULL,
    slippage_usd       numeric          NOT NULL,
    funding_usd        numeric          NOT NULL,
    net_usd            numeric          NOT NULL,
    short_gross_usd    numeric          NOT NULL,
    short_fees_usd     numeric          NOT NULL,
    short_slippage_usd numeric          NOT NULL,
    short_funding_usd  numeric          NOT NULL,
    short_net_usd      numeric          NOT NULL,
    long_gross_usd     numeric          NOT NULL,
    long_fees_usd      numeric          NOT NULL,
    long_slippage_usd  numeric          NOT NULL,
    long_funding_usd   numeric          NOT NULL,
    long_net_usd       numeric          NOT NULL,
    CONSTRAINT xv_pair_events_pkey PRIMARY KEY (pair_id, seq, event_time)
);
COMMENT ON TABLE xv_pair_events IS 'xv_pair_events: the state of a hedged pair after each change (seq 1, 2, ... per pair) with P&L per pair and leg, from xv.pairs; xv_pairs_latest is the current state.';
CREATE INDEX xv_pair_events_coin_time_idx ON xv_pair_events (coin, event_time);
CREATE INDEX xv_pair_events_event_time_brin ON xv_pair_events USING brin (event_time);

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        PERFORM tapeflow_partition_table('xv_signals', 'eval_time', 'month', 1);
        PERFORM tapeflow_partition_table('xv_leg_orders', 'order_time', 'month', 1);
        PERFORM tapeflow_partition_table('xv_funding_payments', 'funding_time', 'month', 1);
        PERFORM tapeflow_partition_table('xv_pair_events', 'event_time', 'month', 1);
    END IF;
END
$$;

-- The current state of every pair: its change with the highest seq. Created after the partitioning
-- above, which drops and re-creates each table (a dependent view would block that).
CREATE VIEW xv_pairs_latest AS
SELECT DISTINCT ON (pair_id)
       pair_id, seq, event_time, signal_id, pair_key, coin, short_venue, short_symbol, long_venue, long_symbol,
       notional_usd, qty, status, reason, close_reason, opened_time, closed_time, entry_spread, exit_spread,
       gross_usd, fees_usd, slippage_usd, funding_usd, net_usd, short_gross_usd, short_fees_usd,
       short_slippage_usd, short_funding_usd, short_net_usd, long_gross_usd, long_fees_usd, long_slippage_usd,
       long_funding_usd, long_net_usd
FROM xv_pair_events
ORDER BY pair_id, seq DESC, event_time DESC;
COMMENT ON VIEW xv_pairs_latest IS 'xv_pairs_latest: the current state of every hedged pair (its xv_pair_events row with the highest seq).';
