"""A resilient Bybit v5 public websocket: subscribe after connecting, JSON heartbeats, re-subscribe on demand.

Reconnects (exponential backoff with full jitter), proactive rotation and the "no network" report are
the Binance `CombinedStream`'s, the subscribe-then-heartbeat connection the base `SubscribingStream`'s
(shared with OKX), all inherited unchanged; what differs is Bybit's protocol:
- one URL per category (`wss://stream.bybit.com/v5/public/linear`) and topics chosen afterwards with
  `{"op":"subscribe","args":[...]}` (sent in chunks of `SUBSCRIBE_CHUNK` topics), answered by
  `{"success":true,"op":"subscribe",...}`;
- the heartbeat is a JSON `{"op":"ping"}` every 20 s (Bybit drops idle connections), answered with a
  pong message; together with the read timeout it catches a silently dead connection;
- every market message is `{"topic","type","ts","data"}` and goes to `on_frame(topic, message, ...)`;
  control messages (acks, pongs) are consumed here, a rejected subscription is logged and dead-lettered
  (it means a topic will never deliver), anything else is dead-lettered as malformed;
- `resubscribe(topics)` sends unsubscribe + subscribe on the live connection: Bybit answers a
  subscription to `orderbook.*` with a fresh snapshot, which is how a broken book is recovered.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson
import structlog
from websockets.exceptions import ConnectionClosed

from producers.base.stream import StreamConfig, SubscribingStream

log = structlog.get_logger("producer.bybit.ws")

SUBSCRIBE_CHUNK = 10  # topics per subscribe request (Bybit caps args per request)


@dataclass
class BybitStreamConfig(StreamConfig):
    """`base_url` is the full category URL; `streams` are Bybit topics (`publicTrade.BTCUSDT`, ...)."""

    max_age_s: float = 24 * 3600.0  # Bybit documents no forced cut; rotate daily all the same

    @property
    def url(self) -> str:
        return self.base_url + ("?replayEnd=true" if self.replay_end else "")


def _op(op: str, args: list[str] | None = None) -> bytes:
    return orjson.dumps({"op": op, "args": args} if args is not None else {"op": op})


class BybitStream(SubscribingStream):
    """Delivers `(topic, message, receive_time_ms, raw)` for every market message until `stop` is set."""

    config: BybitStreamConfig

    async def resubscribe(self, topics: list[str]) -> bool:
        """Unsubscribe and subscribe `topics` again on the live connection; False when there is none."""
        ws = self._ws
        if ws is None:
            return False
        try:
            await ws.send(_op("unsubscribe", topics))
            await ws.send(_op("subscribe", topics))
        except ConnectionClosed:
            return False
        return True

    def _subscribe_requests(self) -> list[str | bytes]:
        topics = list(self.config.streams)
        return [_op("subscribe", topics[i : i + SUBSCRIBE_CHUNK]) for i in range(0, len(topics), SUBSCRIBE_CHUNK)]

    def _ping(self) -> bytes:
        return _op("ping")

    def _dispatch(self, raw: bytes, received: int) -> None:
        msg = self._decode(raw)
        if msg is None:
            return
        topic = msg.get("topic")
        if isinstance(topic, str):
            self._deliver(topic, msg, received, raw)
            return
        op = msg.get("op")
        if op in ("ping", "pong") or msg.get("ret_msg") == "pong":
            self.pongs += 1
        elif op in ("subscribe", "unsubscribe") and msg.get("success") is True:
            pass
        elif op in ("subscribe", "unsubscribe"):
            log.error("bybit rejected a subscription", ret_msg=msg.get("ret_msg"))
            self.on_bad_frame(raw, f"{op} rejected: {msg.get('ret_msg')!r}")  # quoted: one line, whatever it says
        else:
            self.on_bad_frame(raw, "unexpected frame shape (no topic, not a control message)")
