"""The trader's screen: a web UI over the stack's database (`tapeflow ui`, started by `tapeflow up`).

Views: the order-flow chart per symbol (candles, CVD, VWAP, signals; footprint; volume profile;
liquidity heatmap with large trades and liquidations), the market overview (symbols by 24 h volume,
funding heatmap, signal timeline, whale radar, data-quality lights) and the watchlist desk.

Layer: at the CLI/stack level (tests/test_layers.py): it may import execution and backtest code;
only the `tapeflow` CLI and stack import it.

Libraries, and why: Starlette + uvicorn (a small, well-kept ASGI toolkit and server: routing, static
files, Jinja2 templates, streaming responses; no ORM or user model to carry), psycopg_pool (pooled
read-only connections), TradingView Lightweight Charts (a charting library made for markets: candles,
lines, markers, time scale), vendored unchanged from npm into ``static/vendor`` so nothing loads from a
CDN and there is no front-end build step. Footprint, volume profile and the liquidity heatmap are drawn
on plain canvases (``static/orderflow.js``): no maintained open-source web library draws them
(Lightweight Charts has no such series, Grafana no such panel), and each is a grid of rectangles and
text over numbers the server already aggregated.
"""
