-- avg_market_price: the average market price an order's fills so far executed against, before
-- modelled costs (paper: the trade or book level a fill took; exchanges: the fill price). The
-- position's entry price is made of it; an executor restarted inside a part-filled routed entry
-- rebuilds that entry's earlier fills from its orders records. NULL before the first fill and for
-- rows written before records carried it. A nullable column without a default rewrites nothing, also
-- on the compressed hypertables of TimescaleDB.
ALTER TABLE orders ADD COLUMN avg_market_price double precision;
COMMENT ON COLUMN orders.avg_market_price IS 'Average market price of the fills so far, before modelled costs (NULL before the first fill, or before orders carried it).';
