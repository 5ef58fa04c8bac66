-- Funding paid by a position (execution.pnl: qty x mark price x rate at every funding time it was
-- open for, in R; negative when received) as its own column, next to fees_r and slippage_r, so
-- pnl_r_net = pnl_r_gross - fees_r - slippage_r - funding_r can be checked row by row. Rows written
-- before positions carried it were written by an executor that did not charge funding: 0.

ALTER TABLE positions ADD COLUMN funding_r numeric NOT NULL DEFAULT 0;
COMMENT ON COLUMN positions.funding_r IS 'Funding paid so far in R (> 0 paid, < 0 received).';

-- a view may only gain columns at its end (CREATE OR REPLACE keeps the existing ones in order)
CREATE OR REPLACE VIEW trades_closed AS
SELECT c.mode,
       c.position_id,
       c.signal_id,
       c.strategy,
       c.strategy_version,
       c.config_hash,
       c.exchange,
       c.symbol,
       c.direction,
       c.tier,
       o.event_time AS entry_time,
       c.event_time AS exit_time,
       c.entry_price,
       c.exit_price,
       c.exit_reason,
       t.position_id IS NOT NULL AS tp1_hit,
       c.r_usd,
       c.pnl_r_gross,
       c.pnl_r_net,
       c.fees_r,
       c.slippage_r,
       c.pnl_r_net * c.r_usd AS pnl_usd_net,
       c.funding_r
FROM positions c
LEFT JOIN positions o ON o.mode = c.mode AND o.position_id = c.position_id AND o.event = 'opened'
LEFT JOIN positions t ON t.mode = c.mode AND t.position_id = c.position_id AND t.event = 'tp1'
WHERE c.event = 'closed';
