-- Research labels: for every evaluation in `features`, what the price did next, so
-- layer weights can be fitted outside tapeflow. One row per evaluation_id (the features key, so the
-- two tables join); written in bulk by research runs and recomputed in place (upsert).
--
-- y_binary_60m: 1 when the price reached +2 x ATR (at evaluation time) in the evaluation's direction
-- before touching -1 x ATR within 60 minutes, 0 when not, NULL without a direction or ATR or when
-- the data ended first. fwd_return_<h>: price at eval_time + h / entry_price - 1 (raw, not signed).
--
-- An ordinary table on both engines: it is filled by research runs, not by the stream, and read by
-- (evaluation_id, eval_time) joins and per-symbol time ranges; the BRIN index keeps the latter cheap.
-- Privileges come from 0001's default privileges (writer: DML, read-only role: SELECT).
-- (Numbered 0010 to stay clear of migrations other open branches add.)

CREATE TABLE feature_labels (
    evaluation_id  text             NOT NULL,
    eval_time      timestamptz      NOT NULL,
    strategy       text             NOT NULL,
    config_hash    text             NOT NULL,
    exchange       text             NOT NULL,
    symbol         text             NOT NULL,
    direction      text,
    entry_price    double precision NOT NULL,
    atr            double precision,
    y_binary_60m   smallint CHECK (y_binary_60m IN (0, 1)),
    fwd_return_5m  double precision,
    fwd_return_15m double precision,
    fwd_return_60m double precision,
    CONSTRAINT feature_labels_pkey PRIMARY KEY (evaluation_id, eval_time)
);
COMMENT ON TABLE feature_labels IS 'Research labels of feature evaluations: y_binary_60m (+2 ATR before -1 ATR within 60 min) and forward returns at 5/15/60 min.';
CREATE INDEX feature_labels_symbol_time_idx ON feature_labels (exchange, symbol, eval_time);
CREATE INDEX feature_labels_eval_time_brin ON feature_labels USING brin (eval_time);
