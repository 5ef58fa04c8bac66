"""A resilient OKX v5 public websocket: subscribe after connecting, text `ping`/`pong` heartbeats.

Reconnects (exponential backoff with full jitter), proactive rotation, the "no network" report and the
subscribe-then-heartbeat connection are the base's (`CombinedStream`, `SubscribingStream`, shared with
Bybit); what differs is OKX's protocol (docs-v5, "WebSocket"):
- one URL (`wss://ws.okx.com:8443/ws/v5/public`); channels chosen afterwards with
  `{"op":"subscribe","args":[{"channel":...,"instId":...}, ...]}` (sent in chunks of `SUBSCRIBE_CHUNK`),
  answered per channel by `{"event":"subscribe","arg":{...},"connId":...}`;
- OKX closes a connection that received nothing for 30 s: the client sends the text `ping` every
  `ping_interval_s` (20 s) and OKX answers the text `pong`; with the read timeout this also catches a
  silently dead connection;
- every push is `{"arg":{"channel","instId"},["action",]"data":[...]}` and goes to
  `on_frame("channel:instId", message, ...)`; an `error` event (a refused subscription: that channel
  will never deliver) is logged and dead-lettered; anything else unknown is dead-lettered as malformed.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson
import structlog

from producers.base.stream import StreamConfig, SubscribingStream

log = structlog.get_logger("producer.okx.ws")

SUBSCRIBE_CHUNK = 20  # channel args per subscribe request


@dataclass
class OkxStreamConfig(StreamConfig):
    """`base_url` is the full public URL; `streams` are "channel:instId" strings (`books:BTC-USDT-SWAP`)."""

    max_age_s: float = 24 * 3600.0  # OKX documents no forced cut; rotate daily all the same

    @property
    def url(self) -> str:
        return self.base_url + ("?replayEnd=true" if self.replay_end else "")


def channel_arg(stream: str) -> dict[str, str]:
    channel, inst_id = stream.split(":", 1)
    return {"channel": channel, "instId": inst_id}


class OkxStream(SubscribingStream):
    """Delivers `("channel:instId", message, receive_time_ms, raw)` for every push until `stop` is set."""

    config: OkxStreamConfig

    def _subscribe_requests(self) -> list[str | bytes]:
        args = [channel_arg(s) for s in self.config.streams]
        return [
            orjson.dumps({"op": "subscribe", "args": args[i : i + SUBSCRIBE_CHUNK]}).decode()
            for i in range(0, len(args), SUBSCRIBE_CHUNK)
        ]

    def _ping(self) -> str:
        return "ping"

    def _dispatch(self, raw: bytes, received: int) -> None:
        if raw == b"pong":
            self.pongs += 1
            return
        msg = self._decode(raw)
        if msg is None:
            return
        arg = msg.get("arg")
        event = msg.get("event")
        if event is None and isinstance(arg, dict) and "data" in msg:
            self._deliver(f"{arg.get('channel')}:{arg.get('instId')}", msg, received, raw)
        elif event in ("subscribe", "unsubscribe"):
            pass
        elif event == "error":
            log.error("okx rejected a request", code=msg.get("code"), msg=msg.get("msg"))
            self.on_bad_frame(raw, f"okx error {msg.get('code')!r}: {msg.get('msg')!r}"[:500])
        else:
            self.on_bad_frame(raw, "unexpected frame shape (no arg/data, not an event)")
