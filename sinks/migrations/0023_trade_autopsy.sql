-- The trade autopsy (review.autopsy): why a closed trade made or lost what it did.
--
-- orders gains the mid the executor knew when it sent the order, the benchmark of its fills' slippage
-- (slip_bps = (VWAP - mid_at_send) / mid_at_send x 1e4, signed by side). When no book top was known the
-- executor records the last trade price instead and mid_source says so. Both are NULL on rows written
-- before orders carried them; adding nullable columns rewrites nothing.
ALTER TABLE orders ADD COLUMN mid_at_send double precision;
ALTER TABLE orders ADD COLUMN mid_source text CHECK (mid_source IN ('book', 'last_trade'));
COMMENT ON COLUMN orders.mid_at_send IS 'Mid (book) or last trade price (mid_source = last_trade) when the order was sent; NULL before orders carried it.';
COMMENT ON COLUMN orders.mid_source IS 'What mid_at_send is: book or last_trade.';

-- One autopsy per closed trade, written by review.autopsy_db.write_autopsies (an upsert: recomputing
-- a trade replaces its row). run_id is '' for paper/testnet/live positions and the backtest run for
-- backtest trades, so one key covers both. The headline numbers are columns for filtering and the
-- aggregate report; the whole autopsy (TCA per order, peers, counterfactuals, narrative) is `report`.
-- An ordinary table on both engines: one row per closed trade is a small ledger.
CREATE TABLE trade_autopsies (
    mode            text             NOT NULL,
    run_id          text             NOT NULL DEFAULT '',
    position_id     text             NOT NULL,
    strategy        text             NOT NULL,
    exchange        text             NOT NULL,
    symbol          text             NOT NULL,
    direction       text             NOT NULL,
    tier            text             NOT NULL,
    regime          text             NOT NULL,
    entry_time      timestamptz      NOT NULL,
    exit_time       timestamptz      NOT NULL,
    exit_reason     text             NOT NULL,
    gross_r         double precision NOT NULL,
    fees_r          double precision NOT NULL,
    slippage_r      double precision NOT NULL,
    funding_r       double precision NOT NULL,
    net_r           double precision NOT NULL,
    roi_pct         double precision NOT NULL,
    cost_share      double precision,
    entry_slip_bps  double precision,
    exit_slip_bps   double precision,
    maker_share     double precision,
    peer_group      text             NOT NULL,
    peer_count      integer          NOT NULL,
    roi_percentile  double precision,
    verdict         text             NOT NULL,
    narrative       text             NOT NULL,
    report          jsonb            NOT NULL,
    computed_at     timestamptz      NOT NULL,
    CONSTRAINT trade_autopsies_pkey PRIMARY KEY (mode, run_id, position_id)
);
COMMENT ON TABLE trade_autopsies IS 'Trade autopsies: costs against the mid at send, peers, counterfactual exits and a narrative per closed trade.';
CREATE INDEX trade_autopsies_strategy_time_idx ON trade_autopsies (strategy, exit_time);
CREATE INDEX trade_autopsies_exit_time_idx ON trade_autopsies (exit_time);
