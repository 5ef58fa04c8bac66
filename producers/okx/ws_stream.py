"""A resilient OKX v5 public websocket: subscribe after connecting, text `ping`/`pong` heartbeats.

Reconnects (exponential backoff with full jitter), proactive rotation and the "no network" report are
the shared `CombinedStream`'s; what differs is OKX's protocol (docs-v5, "WebSocket"):
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

import asyncio
import time
from dataclasses import dataclass

import orjson
import structlog
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from producers.base.stream import REPLAY_END_PREFIX, CombinedStream, StreamConfig

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


class OkxStream(CombinedStream):
    """Delivers `("channel:instId", message, receive_time_ms, raw)` for every push until `stop` is set."""

    config: OkxStreamConfig

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._ws: ClientConnection | None = None
        self.pongs = 0

    async def _connection(self, first_frame: asyncio.Event, stop: asyncio.Event) -> None:
        cfg = self.config
        try:
            # websockets' own pings are off: OKX's heartbeat is the text ping below
            async with websockets.connect(cfg.url, ping_interval=None, max_size=2**24, open_timeout=10,
                                          close_timeout=2) as ws:
                self.connections += 1
                args = [channel_arg(s) for s in cfg.streams]
                for i in range(0, len(args), SUBSCRIBE_CHUNK):
                    await ws.send(orjson.dumps({"op": "subscribe", "args": args[i:i + SUBSCRIBE_CHUNK]}).decode())
                self._ws = ws
                heartbeat = asyncio.create_task(self._heartbeat(ws), name="okx-ping")
                read_here = 0
                try:
                    while not stop.is_set():
                        raw = await asyncio.wait_for(ws.recv(decode=False), timeout=cfg.read_timeout_s)
                        first_frame.set()
                        if cfg.replay_end and raw.startswith(REPLAY_END_PREFIX) and self._replay_ended(raw, read_here):
                            continue
                        read_here += 1
                        self.messages_in += 1
                        self._dispatch(raw, int(time.time() * 1000))
                finally:
                    heartbeat.cancel()
                    if self._ws is ws:
                        self._ws = None
        except (OSError, InvalidHandshake, InvalidURI, TimeoutError) as exc:
            if not first_frame.is_set():
                self._report_offline(exc)
            raise

    async def _heartbeat(self, ws: ClientConnection) -> None:
        while True:
            await asyncio.sleep(self.config.ping_interval_s)
            try:
                await ws.send("ping")
            except ConnectionClosed:
                return

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
