-- Cross-venue features: one row per coin, ordered venue pair and evaluation, written by
-- the sink from xv.features (the watchlist service). Conventions as in 0003/0004: market values are
-- double precision, times timestamptz; the rolling statistics and the missing reasons are jsonb
-- (their names follow the configured windows). feature_id embeds eval_time
-- (coin:eval_time:sell_venue:buy_venue), so a re-delivered or re-computed sample is the same key and
-- the sink's ON CONFLICT DO NOTHING keeps one row.

CREATE TABLE xv_features (
    feature_id             text             NOT NULL,
    coin                   text             NOT NULL,
    eval_time              timestamptz      NOT NULL,
    sell_venue             text             NOT NULL,
    buy_venue              text             NOT NULL,
    sell_symbol            text,
    buy_symbol             text,
    sweep_notional_usd     double precision NOT NULL,
    spread_top             double precision,
    spread_sweep           double precision,
    sell_bid               double precision,
    buy_ask                double precision,
    sell_sweep_bid         double precision,
    buy_sweep_ask          double precision,
    top_slope_per_min      double precision,
    sweep_slope_per_min    double precision,
    leg_skew_ms            bigint,
    sell_book_age_ms       bigint,
    buy_book_age_ms        bigint,
    funding_diff           double precision,
    funding_diff_8h        double precision,
    sell_funding_rate      double precision,
    buy_funding_rate       double precision,
    sell_next_funding_time timestamptz,
    buy_next_funding_time  timestamptz,
    sell_basis             double precision,
    buy_basis              double precision,
    stats                  jsonb            NOT NULL,
    missing                jsonb            NOT NULL,
    CONSTRAINT xv_features_pkey PRIMARY KEY (feature_id, eval_time)
);
COMMENT ON TABLE xv_features IS 'xv_features: cross-venue spreads (top and swept), rolling statistics, funding and basis per coin and ordered venue pair, with missing reasons.';
CREATE INDEX xv_features_coin_time_idx ON xv_features (coin, eval_time);
CREATE INDEX xv_features_eval_time_idx ON xv_features (eval_time);  -- the newest evaluation (tapeflow watchlist)
CREATE INDEX xv_features_eval_time_brin ON xv_features USING brin (eval_time);

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        PERFORM tapeflow_partition_table('xv_features', 'eval_time', 'month', 1);
    END IF;
END
$$;
