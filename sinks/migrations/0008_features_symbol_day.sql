-- features: one symbol's day without reading the whole day (both engines).
--
-- Rows arrive interleaved by symbol (20 symbols x 3 strategies every second), about five to a heap
-- page, so an index scan for one symbol-day still touched a page for nearly every row it returned:
-- ~260,000 pages, about 2 GB, for a day of one symbol out of twenty. Covering the columns reports
-- and backtests read per symbol (strategy, score, direction, gate, block_reason) lets those queries
-- be answered from the index alone (index-only scans; inserts-only tables are vacuumed by
-- autovacuum, which keeps the visibility map current). The raw `inputs` still come from the heap.
-- On TimescaleDB, compressed chunks are segmented by (exchange, symbol, strategy) and ordered by
-- eval_time, which gives the same locality there.
CREATE INDEX features_symbol_time_cover ON features (exchange, symbol, eval_time)
    INCLUDE (strategy, score, direction, gate, block_reason);
DROP INDEX features_symbol_time_idx;  -- the covering index has the same key
