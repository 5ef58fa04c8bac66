-- config_rev: the registered strategy revision (strategy_revisions.rev, 0024) that made each
-- evaluation, signal, order and position, beside its config_hash. 0 means an unregistered file (the
-- engine started on a file nobody promoted); NULL marks rows written before records carried it, and
-- orders that serve no signal (a reconciler flatten). Nullable columns without a default rewrite
-- nothing, also on the compressed hypertables of TimescaleDB.
ALTER TABLE features ADD COLUMN config_rev integer;
ALTER TABLE signals ADD COLUMN config_rev integer;
ALTER TABLE orders ADD COLUMN config_rev integer;
ALTER TABLE positions ADD COLUMN config_rev integer;
COMMENT ON COLUMN features.config_rev IS 'Registered strategy revision of the evaluation (0: unregistered file; NULL: before records carried it).';
COMMENT ON COLUMN signals.config_rev IS 'Registered strategy revision of the signal (0: unregistered file; NULL: before records carried it).';
COMMENT ON COLUMN orders.config_rev IS 'Strategy revision of the signal the order serves (NULL: no signal, or before orders carried it).';
COMMENT ON COLUMN positions.config_rev IS 'Strategy revision of the position''s signal (0: unregistered file; NULL: before records carried it).';
