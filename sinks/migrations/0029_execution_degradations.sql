-- Execution degradations (execution.slo): every time an SLO rule set or cleared a degradation of the
-- executor (maker_fill_ratio_low -> market orders only; round_trip_slow -> no TWAP and no maker), with
-- the SLI value over the rule's windows and the threshold it passed (the trigger when set, the clear
-- threshold when cleared: hysteresis). Written by the executor service itself (execution.service_slo,
-- the writer role), read by the UI's trades page and by a restarted executor, which resumes the rules
-- whose last row is active. changed_time is the end of the SLO window that decided the change, so a
-- change retried after a database outage is the same row (ON CONFLICT DO NOTHING).
-- A small ledger (a few rows a day at most): not partitioned, kept forever.

CREATE TABLE execution_degradations (
    mode             text             NOT NULL,
    rule             text             NOT NULL,
    changed_time     timestamptz      NOT NULL,
    active           boolean          NOT NULL,  -- true: set; false: cleared
    sli              text             NOT NULL,
    value            double precision,           -- NULL: no sample in the rule's windows
    threshold        double precision NOT NULL,
    samples          integer          NOT NULL,
    market_only      boolean          NOT NULL,  -- the flags in force after the change
    no_twap_no_maker boolean          NOT NULL,
    detail           text             NOT NULL,
    CONSTRAINT execution_degradations_pkey PRIMARY KEY (mode, rule, changed_time, active)
);
COMMENT ON TABLE execution_degradations IS 'execution_degradations: every degradation rule of the executor set or cleared by its SLOs, with value and threshold.';
CREATE INDEX execution_degradations_time_idx ON execution_degradations (changed_time);
COMMENT ON COLUMN execution_degradations.mode IS 'Executor mode: paper, testnet or live.';
COMMENT ON COLUMN execution_degradations.rule IS 'maker_fill_ratio_low (-> market_only) or round_trip_slow (-> no_twap_no_maker).';
COMMENT ON COLUMN execution_degradations.changed_time IS 'End of the SLO window that decided the change.';
COMMENT ON COLUMN execution_degradations.active IS 'true: the rule was set; false: it cleared.';
COMMENT ON COLUMN execution_degradations.sli IS 'The SLI the rule reads (execution.slo.SLIS).';
COMMENT ON COLUMN execution_degradations.value IS 'The SLI over the rule''s windows (NULL: no sample, e.g. an hour without maker orders).';
COMMENT ON COLUMN execution_degradations.threshold IS 'The threshold passed: the trigger when set, the clear threshold (hysteresis) when cleared.';
COMMENT ON COLUMN execution_degradations.samples IS 'Samples behind value.';
COMMENT ON COLUMN execution_degradations.market_only IS 'Entries go to market (flags in force after the change).';
COMMENT ON COLUMN execution_degradations.no_twap_no_maker IS 'One market order, no TWAP, no maker wait (flags in force after the change).';
COMMENT ON COLUMN execution_degradations.detail IS 'The change in words, as logged.';
