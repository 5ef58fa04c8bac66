-- The confidence model on signals and evaluations (strategy key `model:`, stream_apps.core.confidence):
-- p_win, the model's calibrated probability that the signal wins, on signals and on the evaluations that
-- reached the model (NULL elsewhere and without a model); size_mult, the multiple of the executor's 1R the
-- signal risks (the tier's multiplier, times the model's band for p_win, clamped), on every signal the
-- engine writes from now on. NULL marks rows written before records carried them. Nullable columns without
-- a default rewrite nothing, also on the compressed hypertables of TimescaleDB.
ALTER TABLE features ADD COLUMN p_win double precision;
ALTER TABLE signals ADD COLUMN p_win double precision;
ALTER TABLE signals ADD COLUMN size_mult double precision;
COMMENT ON COLUMN features.p_win IS 'Confidence model P(win) at an evaluation that reached the model (NULL: not asked, no model, or before records carried it).';
COMMENT ON COLUMN signals.p_win IS 'Confidence model P(win) of the signal (NULL: the strategy has no model, or before signals carried it).';
COMMENT ON COLUMN signals.size_mult IS 'Multiple of the executor''s 1R the signal risks: tier multiplier x model band, clamped (NULL: before signals carried it).';
