-- Outcome labels (review.labels): what every signal (taken or vetoed) and every trade earned 12, 24
-- and 36 hours after it, from fills, fees, funding and the price at the horizon, written back as the
-- samples mature. One row per (source, sample, horizon). source is the executor mode ('paper',
-- 'live') for the running stack's labels and 'backtest:<run id>' for a backtest run's (the run id
-- of backtest_runs.run_group), so a run's labels sit beside the live ones and compare with them.
-- A recompute replaces a row (the writers upsert); computed_at says when it was computed.
--
-- Money is numeric as in 0004 (summed into reports); net_roi is a ratio, double precision like
-- win_rate; prices and quantities are double precision as in 0003. Small (a few rows per signal):
-- an ordinary table on both engines.

CREATE TABLE outcome_labels (
    source           text             NOT NULL,
    sample_kind      text             NOT NULL CHECK (sample_kind IN ('signal', 'trade')),
    sample_id        text             NOT NULL,  -- signal_id, or position_id of a trade
    horizon_h        integer          NOT NULL CHECK (horizon_h > 0),
    strategy         text             NOT NULL,
    config_hash      text             NOT NULL,
    config_rev       integer          NOT NULL DEFAULT 0,  -- the strategy revision; 0: a file never registered
    exchange         text             NOT NULL,
    symbol           text             NOT NULL,
    direction        text             NOT NULL,
    taken            boolean          NOT NULL,  -- false: a vetoed signal, labelled as a hypothetical taker entry
    position_id      text,
    t0               timestamptz      NOT NULL,  -- signal: eval_time; trade: entry time
    horizon_time     timestamptz      NOT NULL,  -- t0 + horizon_h
    price_at_horizon double precision NOT NULL,  -- last trade at or before horizon_time
    qty_open         double precision NOT NULL,  -- quantity still open at horizon_time
    realized_pnl     numeric          NOT NULL,
    unrealized_pnl   numeric          NOT NULL,
    gross_pnl        numeric          NOT NULL,
    fees             numeric          NOT NULL,
    funding          numeric          NOT NULL,  -- > 0 paid, settlements in (t0, horizon_time]
    net_pnl          numeric          NOT NULL,  -- gross_pnl - fees - funding
    basis            numeric          NOT NULL,  -- entry notional (/ leverage when known)
    net_roi          double precision NOT NULL,  -- net_pnl / basis
    threshold        double precision NOT NULL,  -- the strategy's: pos at >= +threshold, neg at <= -threshold
    label            text             NOT NULL CHECK (label IN ('pos', 'neg', 'neutral')),
    computed_at      timestamptz      NOT NULL,
    CONSTRAINT outcome_labels_pkey PRIMARY KEY (source, sample_kind, sample_id, horizon_h)
);
COMMENT ON TABLE outcome_labels IS 'Outcome labels: net P&L and ROI of every signal and trade at t0 + 12/24/36 h (review.labels), per source (paper, live, backtest:<run id>).';
CREATE INDEX outcome_labels_strategy_idx ON outcome_labels (strategy, config_hash, t0);
CREATE INDEX outcome_labels_t0_idx ON outcome_labels (source, t0);
CREATE INDEX outcome_labels_position_idx ON outcome_labels (position_id);

-- How far the running stack's hourly job has labelled each source: samples whose horizons all
-- ended before labelled_to are done (or had no price data then; `tapeflow labels backfill` retries
-- a window).
CREATE TABLE outcome_label_progress (
    source      text        NOT NULL,
    labelled_to timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    CONSTRAINT outcome_label_progress_pkey PRIMARY KEY (source)
);
COMMENT ON TABLE outcome_label_progress IS 'The outcome-label job''s watermark per source (review.label_job).';
