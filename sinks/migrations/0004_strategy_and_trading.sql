-- Engine and execution tables: features (every evaluation), signals, orders, fills, positions,
-- risk_events, and the trades_closed view Grafana's trading panels read. Conventions as in 0003.
--
-- Money is numeric: fees, P&L in R, R in USD and risk-guard P&L are summed over many rows into
-- equity curves, win rates and profit factors, and compared with thresholds (daily loss -5R).
-- numeric sums are exact and independent of row order, so a report computed twice, or by two
-- engines, agrees to the last digit; the records carry doubles, which PostgreSQL converts with 15
-- significant digits (0.1 stays 0.1). Prices and quantities stay double precision as in 0003.
--
-- Only features is time-series sized (one row per tick x strategy x symbol); the trading tables
-- are small ledgers, ordinary tables on both engines, so their natural keys need no time column.

CREATE TABLE features (
    evaluation_id    text             NOT NULL,
    strategy         text             NOT NULL,
    strategy_version text             NOT NULL,
    config_hash      text             NOT NULL,
    exchange         text             NOT NULL,
    symbol           text             NOT NULL,
    eval_time        timestamptz      NOT NULL,
    inputs           jsonb            NOT NULL,
    layer_scores     jsonb            NOT NULL,
    score            double precision NOT NULL,
    direction        text,
    gate             text,
    block_reason     text,
    -- evaluation_id embeds eval_time (strategy:config_hash:exchange:symbol:eval_time)
    CONSTRAINT features_pkey PRIMARY KEY (evaluation_id, eval_time)
);
COMMENT ON TABLE features IS 'features: every strategy evaluation with raw inputs, layer scores, gate and block reason.';
CREATE INDEX features_symbol_time_idx ON features (exchange, symbol, eval_time);
CREATE INDEX features_eval_time_brin ON features USING brin (eval_time);

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        PERFORM tapeflow_partition_table('features', 'eval_time', 'month', 1);
    END IF;
END
$$;

CREATE TABLE signals (
    signal_id        text             NOT NULL,
    strategy         text             NOT NULL,
    strategy_version text             NOT NULL,
    config_hash      text             NOT NULL,
    exchange         text             NOT NULL,
    symbol           text             NOT NULL,
    eval_time        timestamptz      NOT NULL,
    direction        text             NOT NULL,
    tier             text             NOT NULL,
    score            double precision NOT NULL,
    factors          jsonb            NOT NULL,
    price            double precision NOT NULL,
    atr              double precision NOT NULL,
    risk_distance    double precision NOT NULL,
    sl_price         double precision NOT NULL,
    tp1_price        double precision NOT NULL,
    tp2_price        double precision NOT NULL,
    sl_r             double precision NOT NULL,
    tp1_r            double precision NOT NULL,
    tp2_r            double precision NOT NULL,
    is_flip          boolean          NOT NULL,
    CONSTRAINT signals_pkey PRIMARY KEY (signal_id)
);
COMMENT ON TABLE signals IS 'signals: trade signals with exit plan and provenance (strategy, strategy_version, config_hash).';
CREATE INDEX signals_symbol_time_idx ON signals (exchange, symbol, eval_time);
CREATE INDEX signals_strategy_time_idx ON signals (strategy, config_hash, eval_time);

CREATE TABLE orders (
    client_order_id   text             NOT NULL,
    signal_id         text,
    position_id       text,
    exchange_order_id text,
    exchange          text             NOT NULL,
    symbol            text             NOT NULL,
    mode              text             NOT NULL,
    leg               text             NOT NULL,
    side              text             NOT NULL,
    type              text             NOT NULL,
    price             double precision,
    stop_price        double precision,
    qty               double precision NOT NULL,
    filled_qty        double precision NOT NULL,
    avg_fill_price    double precision,
    reduce_only       boolean          NOT NULL,
    state             text             NOT NULL,
    reason            text,
    event_time        timestamptz      NOT NULL,
    -- one row per state transition. The records carry no sequence number; a transition is
    -- identified by the state it reaches and the cumulative fill at that point (successive
    -- PARTIALLY_FILLED events differ in filled_qty). event_time is deliberately not part of the
    -- key: an executor re-publishing a transition after a restart may stamp a new engine time.
    -- mode is: paper and live orders of the same signal share client_order_id.
    CONSTRAINT orders_pkey PRIMARY KEY (mode, client_order_id, state, filled_qty)
);
COMMENT ON TABLE orders IS 'orders: order state transitions; the latest event per (mode, client_order_id) is the order''s state.';
CREATE INDEX orders_symbol_time_idx ON orders (exchange, symbol, event_time);
CREATE INDEX orders_signal_idx ON orders (signal_id);

CREATE TABLE fills (
    exchange          text             NOT NULL,
    symbol            text             NOT NULL,
    mode              text             NOT NULL,
    client_order_id   text             NOT NULL,
    exchange_order_id text             NOT NULL,
    trade_id          text             NOT NULL,
    side              text             NOT NULL,
    price             double precision NOT NULL,
    qty               double precision NOT NULL,
    fee               numeric          NOT NULL,
    fee_asset         text             NOT NULL,
    liquidity         text             NOT NULL,
    reference_price   double precision,
    event_time        timestamptz      NOT NULL,
    -- exchange trade ids are unique per symbol, but a paper trade id comes from the market trade
    -- that filled the order, and one market trade can fill several paper orders: the order id is
    -- part of the key
    CONSTRAINT fills_pkey PRIMARY KEY (mode, exchange, symbol, exchange_order_id, trade_id)
);
COMMENT ON TABLE fills IS 'fills: executions; slippage_bps = (price - reference_price) / reference_price * 1e4, signed by side.';
CREATE INDEX fills_client_order_idx ON fills (client_order_id);
CREATE INDEX fills_symbol_time_idx ON fills (exchange, symbol, event_time);

CREATE TABLE positions (
    position_id      text             NOT NULL,
    signal_id        text             NOT NULL,
    strategy         text             NOT NULL,
    strategy_version text             NOT NULL,
    config_hash      text             NOT NULL,
    exchange         text             NOT NULL,
    symbol           text             NOT NULL,
    mode             text             NOT NULL,
    event            text             NOT NULL,
    direction        text             NOT NULL,
    tier             text             NOT NULL,
    entry_price      double precision NOT NULL,
    qty              double precision NOT NULL,
    r_usd            numeric          NOT NULL,
    sl_price         double precision NOT NULL,
    tp1_price        double precision NOT NULL,
    tp2_price        double precision NOT NULL,
    exit_price       double precision,
    exit_reason      text,
    pnl_r_gross      numeric,
    pnl_r_net        numeric,
    fees_r           numeric          NOT NULL,
    slippage_r       numeric          NOT NULL,
    event_time       timestamptz      NOT NULL,
    -- each lifecycle step (opened, tp1, closed) happens at most once per position
    CONSTRAINT positions_pkey PRIMARY KEY (mode, position_id, event)
);
COMMENT ON TABLE positions IS 'positions: lifecycle events (opened, tp1, closed); P&L in R, r_usd converts to quote currency.';
CREATE INDEX positions_strategy_time_idx ON positions (strategy, event_time);
CREATE INDEX positions_symbol_time_idx ON positions (exchange, symbol, event_time);

-- One row per closed position: what the equity, win-rate, profit-factor and exit-reason panels
-- need. exit_price is the closing event's (the quantity left after tp1, when tp1 was hit).
CREATE VIEW trades_closed AS
SELECT c.mode,
       c.position_id,
       c.signal_id,
       c.strategy,
       c.strategy_version,
       c.config_hash,
       c.exchange,
       c.symbol,
       c.direction,
       c.tier,
       o.event_time AS entry_time,
       c.event_time AS exit_time,
       c.entry_price,
       c.exit_price,
       c.exit_reason,
       t.position_id IS NOT NULL AS tp1_hit,
       c.r_usd,
       c.pnl_r_gross,
       c.pnl_r_net,
       c.fees_r,
       c.slippage_r,
       c.pnl_r_net * c.r_usd AS pnl_usd_net
FROM positions c
LEFT JOIN positions o ON o.mode = c.mode AND o.position_id = c.position_id AND o.event = 'opened'
LEFT JOIN positions t ON t.mode = c.mode AND t.position_id = c.position_id AND t.event = 'tp1'
WHERE c.event = 'closed';

CREATE TABLE risk_events (
    scope              text        NOT NULL,
    mode               text        NOT NULL,
    decision           text        NOT NULL,
    state              text        NOT NULL,
    reason             text        NOT NULL,
    daily_pnl_r        numeric,
    consecutive_losses integer,
    paused_until       timestamptz,
    event_time         timestamptz NOT NULL,
    -- risk.events is compacted and re-read from the start by a restarted sink: the same decision
    -- comes back with the same engine time
    CONSTRAINT risk_events_pkey PRIMARY KEY (mode, scope, event_time, decision, reason)
);
COMMENT ON TABLE risk_events IS 'risk.events: full history of risk-guard decisions (the topic keeps only the latest per scope).';
CREATE INDEX risk_events_time_idx ON risk_events (event_time);
