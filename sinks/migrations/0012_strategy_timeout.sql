-- Strategy-owned timeouts: a signal carries its strategy's exits.timeout_min as
-- timeout_ms, and the executor runs its positions with it (its own timeout_min only for signals
-- without one). The signals table keeps the whole exit plan, so it gains the timeout next to sl_r,
-- tp1_r and tp2_r; every position event carries the timeout the position actually ran with (the
-- signal's, or the executor's default), which is what a closed trade's "timeout" exit is checked
-- against. Rows written before records carried the field have NULL: their position ran with the
-- executor's timeout_min of the time. Ordinary tables on both engines, like 0006_position_funding.

ALTER TABLE signals ADD COLUMN timeout_ms bigint;
COMMENT ON COLUMN signals.timeout_ms IS 'Position timeout from the strategy''s exits.timeout_min, ms; NULL for signals written before signals carried it.';

ALTER TABLE positions ADD COLUMN timeout_ms bigint;
COMMENT ON COLUMN positions.timeout_ms IS 'Timeout the position ran with, ms after its entry (the signal''s, else the executor''s timeout_min); NULL for events written before positions carried it.';
