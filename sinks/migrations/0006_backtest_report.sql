-- Backtest report columns. Ordinary tables on both engines, like 0005.

-- One backtest_runs row per strategy of a run: the schema's strategy, version, config hash and
-- headline metrics are per strategy, and an A/B run's strategies are alternatives whose numbers must
-- never be added together. The row's run_id is '<run id>:<strategy name>' (strategy names are
-- [a-z0-9_]); run_group is the run id the CLI printed and groups the rows of one invocation (the
-- report writer deletes and re-inserts a whole group, so storing a run again is idempotent).
-- partial: the run was interrupted (Ctrl-C) and covers only the events processed until then.
ALTER TABLE backtest_runs
    ADD COLUMN run_group        text,
    ADD COLUMN partial          boolean NOT NULL DEFAULT false,
    ADD COLUMN slippage_r       numeric,
    ADD COLUMN funding_r        numeric,
    ADD COLUMN expectancy_r     numeric,
    ADD COLUMN sharpe_per_day   double precision,
    ADD COLUMN evaluations      bigint,
    ADD COLUMN signals          bigint;
COMMENT ON COLUMN backtest_runs.run_group IS 'The run id shared by the rows (one per strategy) of one backtest invocation.';
COMMENT ON COLUMN backtest_runs.partial IS 'Interrupted run: metrics cover only the events processed before the stop.';
COMMENT ON COLUMN backtest_runs.sharpe_per_day IS 'Mean / sample std of net R per UTC day over the whole range, zero days included.';
COMMENT ON COLUMN backtest_runs.sharpe IS 'sharpe_per_day x sqrt(365) (annualised; crypto trades every day).';
COMMENT ON COLUMN backtest_runs.funding_r IS 'Funding paid by the positions in R (> 0 paid, < 0 received).';
CREATE INDEX backtest_runs_group_idx ON backtest_runs (run_group);

-- Funding paid by a position, in R (> 0 paid, < 0 received): net = gross - fees - slippage - funding.
ALTER TABLE backtest_trades ADD COLUMN funding_r numeric NOT NULL DEFAULT 0;
COMMENT ON COLUMN backtest_trades.funding_r IS 'Funding paid by the position in R (> 0 paid, < 0 received).';
