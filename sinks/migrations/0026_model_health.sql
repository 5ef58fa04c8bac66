-- Confidence-model health (backtest.research.model_health): each judgement of a strategy's model over
-- its last labelled trades, written by the stack's labels service after each hourly pass (role
-- 'active' or 'canary'), by `tapeflow strategy promote` when it judges a candidate ('candidate') and
-- by the guardrail controller when it judges a running canary ('canary'). One row per judgement; the
-- Grafana panel draws auc and brier over time, the newest row per strategy and role is the current
-- verdict.
--
-- label: a trade is a win when its outcome label at horizon_h is 'pos' (net ROI at or above the
-- strategy's threshold); p is the model's calibrated P(win) at the trade's signal (the signal's own
-- p_win when it was made with this model, else the model file applied to the stored feature row).
-- status 'insufficient': fewer than the minimum samples, or one class only (not judged).
-- An ordinary table on both engines: a handful of rows an hour.
CREATE TABLE model_health (
    time          timestamptz      NOT NULL,
    strategy      text             NOT NULL,
    role          text             NOT NULL CHECK (role IN ('active', 'canary', 'candidate')),
    config_rev    integer,                     -- the judged revision (NULL: a file never registered)
    model_sha256  text             NOT NULL,
    sources       text             NOT NULL,   -- the label sources read, e.g. 'paper,live'
    horizon_h     integer          NOT NULL CHECK (horizon_h > 0),
    window_trades integer          NOT NULL CHECK (window_trades > 0),
    samples       integer          NOT NULL CHECK (samples >= 0),
    positives     integer          NOT NULL CHECK (positives >= 0),
    auc           double precision,            -- NULL: no samples or one class only
    brier         double precision,
    log_loss      double precision,
    status        text             NOT NULL CHECK (status IN ('healthy', 'unhealthy', 'insufficient')),
    reason        text             NOT NULL,
    CONSTRAINT model_health_pkey PRIMARY KEY (strategy, role, time)
);
COMMENT ON TABLE model_health IS 'Confidence-model health: rolling AUC and Brier score of a strategy''s model over its last labelled trades, with the verdict (backtest.research.model_health).';
CREATE INDEX model_health_time_idx ON model_health (time);
