"""Bybit v5 linear (USDT perpetuals) as tapeflow's second exchange, into the same md.* topics and schemas."""
