"""Binance's combined stream: every subscribed stream in one URL (`/stream?streams=a/b/c`).

The connection itself (reconnects, rotation before Binance's 24 h cut, read timeouts) is the
venue-neutral `producers.base.stream.CombinedStream`.
"""

from __future__ import annotations

from dataclasses import dataclass

from producers.base.stream import StreamConfig


@dataclass
class BinanceStreamConfig(StreamConfig):
    @property
    def url(self) -> str:
        url = f"{self.base_url.rstrip('/')}/stream?streams={'/'.join(self.streams)}"
        return url + "&replayEnd=true" if self.replay_end else url
