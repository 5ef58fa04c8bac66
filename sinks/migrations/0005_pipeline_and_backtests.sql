-- Dead letters and backtest results. Ordinary tables on both engines.

-- Every dlq.* topic lands here, byte for byte, with the error, so a failure is queryable from
-- Grafana and replayable after a fix. Two natural keys, both enforced (the sink's
-- ON CONFLICT DO NOTHING has no conflict target, so either one deduplicates):
-- * (source_topic, source_partition, source_offset, stage) when the failed record came from Kafka:
--   the same source record failing again at the same stage (a consumer restart re-reading it) is
--   one failure, kept with its first error. Rows without coordinates (a frame a producer could not
--   parse never reached Kafka) have NULLs here and never conflict on this key.
-- * content_sha256, the digest of the whole dead letter (sinks/tables.py): the DLQ record itself
--   redelivered to the sink is stored once, with or without coordinates.
-- The column names source_partition/source_offset/raw_key/raw_value differ from the record's
-- partition/offset/key/value because OFFSET is a reserved word and the others are ambiguous.
CREATE TABLE pipeline_errors (
    id               bigint      GENERATED ALWAYS AS IDENTITY,
    source_topic     text        NOT NULL,
    source_partition integer,
    source_offset    bigint,
    raw_key          bytea,
    raw_value        bytea       NOT NULL,
    error            text        NOT NULL,
    stage            text        NOT NULL,
    event_time       timestamptz NOT NULL,
    content_sha256   bytea       NOT NULL,
    CONSTRAINT pipeline_errors_pkey PRIMARY KEY (id),
    CONSTRAINT pipeline_errors_source_key UNIQUE (source_topic, source_partition, source_offset, stage),
    CONSTRAINT pipeline_errors_content_key UNIQUE (content_sha256)
);
COMMENT ON TABLE pipeline_errors IS 'dlq.*: records some stage could not process, with raw bytes and error.';
CREATE INDEX pipeline_errors_time_idx ON pipeline_errors (event_time);
CREATE INDEX pipeline_errors_stage_time_idx ON pipeline_errors (stage, event_time);

-- One backtest (or one walk-forward fold: parent_run_id points at the whole run). Headline
-- metrics are columns for filtering and Grafana; breakdowns (by tier, symbol, hour, exit reason)
-- and the execution model's parameters are jsonb, so the report can grow without migrations.
CREATE TABLE backtest_runs (
    run_id            text             NOT NULL,
    parent_run_id     text             REFERENCES backtest_runs (run_id) ON DELETE CASCADE,
    fold              integer,
    fold_role         text             CHECK (fold_role IN ('train', 'test')),
    strategy          text             NOT NULL,
    strategy_version  text             NOT NULL,
    config_hash       text             NOT NULL,
    config            jsonb            NOT NULL,
    source            text             NOT NULL,
    exchange          text             NOT NULL,
    symbols           text[]           NOT NULL,
    from_time         timestamptz      NOT NULL,
    to_time           timestamptz      NOT NULL,
    params            jsonb            NOT NULL DEFAULT '{}',
    status            text             NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'finished', 'failed')),
    error             text,
    started_at        timestamptz      NOT NULL,
    finished_at       timestamptz,
    events_processed  bigint,
    trades            integer,
    wins              integer,
    losses            integer,
    win_rate          double precision,
    gross_r           numeric,
    fees_r            numeric,
    net_r             numeric,
    profit_factor     double precision,
    max_drawdown_r    numeric,
    sharpe            double precision,
    initial_balance   numeric,
    final_balance     numeric,
    report            jsonb            NOT NULL DEFAULT '{}',
    CONSTRAINT backtest_runs_pkey PRIMARY KEY (run_id),
    CONSTRAINT backtest_runs_range_check CHECK (to_time > from_time)
);
COMMENT ON TABLE backtest_runs IS 'Backtest runs and walk-forward folds: inputs, provenance, headline metrics, report.';
CREATE INDEX backtest_runs_strategy_idx ON backtest_runs (strategy, config_hash, started_at);
CREATE INDEX backtest_runs_parent_idx ON backtest_runs (parent_run_id);

-- The closed trades of one run, shaped like trades_closed so the same panels can show either.
CREATE TABLE backtest_trades (
    run_id        text             NOT NULL REFERENCES backtest_runs (run_id) ON DELETE CASCADE,
    position_id   text             NOT NULL,
    signal_id     text             NOT NULL,
    exchange      text             NOT NULL,
    symbol        text             NOT NULL,
    direction     text             NOT NULL,
    tier          text             NOT NULL,
    score         double precision NOT NULL,
    entry_time    timestamptz      NOT NULL,
    exit_time     timestamptz      NOT NULL,
    entry_price   double precision NOT NULL,
    exit_price    double precision NOT NULL,
    sl_price      double precision NOT NULL,
    tp1_price     double precision NOT NULL,
    tp2_price     double precision NOT NULL,
    risk_distance double precision NOT NULL,
    exit_reason   text             NOT NULL,
    tp1_hit       boolean          NOT NULL,
    r_usd         numeric          NOT NULL,
    pnl_r_gross   numeric          NOT NULL,
    pnl_r_net     numeric          NOT NULL,
    fees_r        numeric          NOT NULL,
    slippage_r    numeric          NOT NULL,
    pnl_usd_net   numeric          NOT NULL,
    CONSTRAINT backtest_trades_pkey PRIMARY KEY (run_id, position_id)
);
COMMENT ON TABLE backtest_trades IS 'Closed trades of one backtest run.';
CREATE INDEX backtest_trades_exit_idx ON backtest_trades (run_id, exit_time);
