-- market_price: the price of the market a fill executed against, before modelled costs (paper: the
-- trade that filled a taker order, the limit for a maker fill; exchanges: the fill price). An executor
-- restarted inside a part-filled order replays that order's fills one by one from the fills topic with
-- it, so the position opens bit-identical to the uninterrupted run's. NULL for rows written before
-- records carried it. A nullable column without a default rewrites nothing, also on the compressed
-- hypertables of TimescaleDB.
ALTER TABLE fills ADD COLUMN market_price double precision;
COMMENT ON COLUMN fills.market_price IS 'Market price the fill executed against, before modelled costs (NULL before fills carried it).';
