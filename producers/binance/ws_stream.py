"""Binance's combined stream: every subscribed stream in one URL (`/stream?streams=a/b/c`).

The connection itself (reconnects, rotation before Binance's 24 h cut, read timeouts) is the
venue-neutral `producers.base.stream.CombinedStream`.
"""

from __future__ import annotations

from dataclasses import dataclass

from producers.base.stream import StreamConfig


@dataclass
class BinanceStreamConfig(StreamConfig):
    # the producer subscribes `<sym>@markPrice@1s`, a frame per symbol every second however quiet the
    # market: 10 s without any frame is a dead (half-open) connection. 30 s (the base default) kept a
    # producer on a silent connection for 30 s before it reconnected and filled the hole from REST,
    # over the 30 s in which data must flow again after a fault (tests/faults)
    read_timeout_s: float = 10.0

    @property
    def url(self) -> str:
        url = f"{self.base_url.rstrip('/')}/stream?streams={'/'.join(self.streams)}"
        return url + "&replayEnd=true" if self.replay_end else url
