"""Which part of a warm start's window comes as minute bars and which trade by trade.

One function for both starts that must agree: the live warm start (``producers.binance.warm_start``:
1m klines for the bars, REST aggTrades for the detail) and the backtest that starts the same way for
parity (``backtest.sources.warm_start``, ``tapeflow backtest --warm-start-approximation``: the bars made
from the source's own trades by ``stream_apps.core.minute_bars.minute_bars_from_trades``).

For a start at ``now_ms`` priming ``hours``: the window is ``[now - hours, now)``; minute bars from the
minute the window starts in (1m klines are asked from there: the first bar holds that whole minute) up
to ``detail_from_ms``, the minute ``detail_minutes`` before ``now`` starts in; every trade from there on.
With ``detail_minutes`` 0, or not shorter than the window, there are no bars (``detail_from_ms`` None).
"""

from __future__ import annotations

from dataclasses import dataclass

MINUTE_MS = 60_000
HOUR_MS = 3_600_000


@dataclass(frozen=True)
class WarmStartSpan:
    since_ms: int  # the window's start (now - hours)
    now_ms: int  # the live start: the window's end
    bars_from_ms: int  # the first minute bar's open: the minute ``since_ms`` lies in
    detail_from_ms: int | None  # trades one by one from here (a minute's start); None: every trade, no bars

    def bar_minutes(self) -> range:
        """The opens of the minutes that come as bars (empty without bars)."""
        return range(self.bars_from_ms, self.detail_from_ms or self.bars_from_ms, MINUTE_MS)


def warm_start_span(now_ms: int, hours: float, detail_minutes: float) -> WarmStartSpan:
    """The span of a warm start at ``now_ms`` (module docstring)."""
    since_ms = now_ms - round(hours * HOUR_MS)
    detail_ms = round(detail_minutes * MINUTE_MS)
    detail_from = (now_ms - detail_ms) // MINUTE_MS * MINUTE_MS if 0 < detail_ms < now_ms - since_ms else None
    return WarmStartSpan(since_ms, now_ms, since_ms // MINUTE_MS * MINUTE_MS, detail_from)
