-- Hedged pairs as they really fill: each leg order now says what it filled of its
-- quantity, the touch when it was sent, its IOC limit, when it was sent, its attempt and what the
-- leg's travel time and a liquidation cost; a pair's state splits leg latency and liquidation out
-- of its pnl; a funding payment keeps the forecast rate beside the settled one; a signal carries its
-- forecast carry and the hours to break even. Nullable, no default: rows written before records
-- carried the fields stay NULL (the instant model, no forecast kept). On TimescaleDB these tables are
-- compressed hypertables (0017): adding nullable columns without a default is allowed there too.

ALTER TABLE xv_leg_orders
    ADD COLUMN filled_qty double precision,
    ADD COLUMN ref_price double precision,
    ADD COLUMN limit_price double precision,
    ADD COLUMN sent_time timestamptz,
    ADD COLUMN attempt integer,
    ADD COLUMN latency_usd double precision,
    ADD COLUMN liquidation_usd double precision;
COMMENT ON COLUMN xv_leg_orders.filled_qty IS 'What the IOC order filled of qty, coins (status PARTIAL when less); NULL in the instant model (a FILLED order filled qty).';
COMMENT ON COLUMN xv_leg_orders.ref_price IS 'Touch of the side taken when the order was sent (entries and their retries: at the signal), per one coin.';
COMMENT ON COLUMN xv_leg_orders.limit_price IS 'The IOC limit, per one coin; NULL: whatever the book held.';
COMMENT ON COLUMN xv_leg_orders.sent_time IS 'When the order was sent; it met the book at order_time (sent + the venue''s latency).';
COMMENT ON COLUMN xv_leg_orders.attempt IS '0, 1, 2 ... per leg and entry/exit code (retries, unwinds); part of client_order_id.';
COMMENT ON COLUMN xv_leg_orders.latency_usd IS 'filled x how much the touch moved against the order while it travelled, USDT.';
COMMENT ON COLUMN xv_leg_orders.liquidation_usd IS 'The venue''s penalty when the leg was liquidated, USDT.';

ALTER TABLE xv_pair_events
    ADD COLUMN leg_latency_usd double precision,
    ADD COLUMN liquidation_usd double precision,
    ADD COLUMN short_leg_latency_usd double precision,
    ADD COLUMN short_liquidation_usd double precision,
    ADD COLUMN long_leg_latency_usd double precision,
    ADD COLUMN long_liquidation_usd double precision;
COMMENT ON COLUMN xv_pair_events.leg_latency_usd IS 'What the legs'' travel time cost, USDT: net_usd = gross - fees - slippage - funding - leg_latency - liquidation.';
COMMENT ON COLUMN xv_pair_events.liquidation_usd IS 'Venue penalties of liquidated legs, USDT.';

ALTER TABLE xv_funding_payments ADD COLUMN predicted_rate double precision;
COMMENT ON COLUMN xv_funding_payments.predicted_rate IS 'The first rate announced for this settlement: a forecast kept beside the settled rate, never booked.';

ALTER TABLE xv_signals
    ADD COLUMN expected_carry_8h_usd double precision,
    ADD COLUMN entry_sweep_cost double precision,
    ADD COLUMN break_even_hours double precision;
COMMENT ON COLUMN xv_signals.expected_carry_8h_usd IS 'Funding the hedge is forecast to receive per 8 h on notional_usd (predicted rates).';
COMMENT ON COLUMN xv_signals.break_even_hours IS 'Hours of the forecast carry that pay back four taker fees and both entry sweeps; NULL when the hedge receives no funding.';

-- The current state of every pair gains the two new parts of its pnl (columns added at the end).
CREATE OR REPLACE VIEW xv_pairs_latest AS
SELECT DISTINCT ON (pair_id)
       pair_id, seq, event_time, signal_id, pair_key, coin, short_venue, short_symbol, long_venue, long_symbol,
       notional_usd, qty, status, reason, close_reason, opened_time, closed_time, entry_spread, exit_spread,
       gross_usd, fees_usd, slippage_usd, funding_usd, net_usd, short_gross_usd, short_fees_usd,
       short_slippage_usd, short_funding_usd, short_net_usd, long_gross_usd, long_fees_usd, long_slippage_usd,
       long_funding_usd, long_net_usd, leg_latency_usd, liquidation_usd
FROM xv_pair_events
ORDER BY pair_id, seq DESC, event_time DESC;
