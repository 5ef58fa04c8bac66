"""OKX USDT perpetual swaps (v5 public websocket and REST) on the neutral producer base."""
