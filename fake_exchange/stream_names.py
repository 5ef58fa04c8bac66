"""Binance stream-name rules shared by the recording parser and the websocket server.

Binance names a stream ``<lowercase symbol>@<kind>[@<option>]`` (``btcusdt@depth@100ms``) or, for
all-market streams, ``!<kind>@arr`` (``!forceOrder@arr``). The kind keeps its camel case, only the
symbol part is lower case, so clients that send ``BTCUSDT@aggTrade`` are normalised rather than
silently matching nothing. Raw (non-enveloped) recordings carry no stream name, so
:func:`infer_stream` maps a payload back to one of the subscribed stream names.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

# Payload event type ("e") -> the stream kind Binance publishes it on.
_EVENT_KIND = {
    "aggTrade": "aggTrade",
    "trade": "trade",
    "depthUpdate": "depth",
    "kline": "kline",
    "bookTicker": "bookTicker",
    "markPriceUpdate": "markPrice",
    "forceOrder": "forceOrder",
    "24hrTicker": "ticker",
    "24hrMiniTicker": "miniTicker",
}


def normalise_stream(name: str) -> str:
    """Lower-case the symbol part of a stream name; leave all-market (``!``) names untouched."""
    name = name.strip()
    if not name or name.startswith("!"):
        return name
    symbol, sep, rest = name.partition("@")
    return symbol.lower() + sep + rest


def streams_from_url(url: str) -> list[str]:
    """Streams a Binance websocket URL subscribes to: ``/stream?streams=a/b`` or ``/ws/a/b``."""
    parts = urlsplit(url)
    path = parts.path.rstrip("/")
    if path.endswith("/stream") or path == "/stream":
        values = parse_qs(parts.query).get("streams", [])
        return [normalise_stream(s) for v in values for s in v.split("/") if s]
    if "/ws" in path:
        tail = path.split("/ws", 1)[1].strip("/")
        return [normalise_stream(s) for s in tail.split("/") if s]
    return []


def symbol_of_stream(stream: str) -> str | None:
    """Upper-case symbol of a per-symbol stream, ``None`` for all-market streams."""
    if stream.startswith("!") or "@" not in stream:
        return None
    return stream.split("@", 1)[0].upper()


def infer_stream(payload: object, subscribed: list[str]) -> str:
    """Stream name of a raw (non-enveloped) payload, resolved against the subscribed streams.

    A single subscribed stream owns every frame. Otherwise the event type and symbol select the
    subscribed stream with that symbol and kind (``sushiusdt@depth`` matches ``sushiusdt@depth@100ms``);
    all-market arrays match the ``!<kind>@arr`` stream. Unresolvable payloads get the canonical
    ``<symbol>@<kind>`` name so they still route somewhere predictable.
    """
    if len(subscribed) == 1:
        return subscribed[0]
    is_array = isinstance(payload, list)
    first = payload[0] if is_array and payload else payload
    if not isinstance(first, dict):
        return "unknown"
    event = str(first.get("e", ""))
    kind = _EVENT_KIND.get(event, event)
    inner = first.get("o") if isinstance(first.get("o"), dict) else None
    symbol = str(first.get("s") or (inner or {}).get("s") or "").lower()
    all_market = f"!{kind}@arr"
    if all_market in subscribed and (is_array or kind == "forceOrder"):
        return all_market
    if kind == "kline" and isinstance(first.get("k"), dict):
        kind = f"kline_{first['k'].get('i', '')}"
    base = f"{symbol}@{kind}"
    for stream in subscribed:
        if stream == base or stream.startswith(base + "@"):
            return stream
    return all_market if is_array else base
