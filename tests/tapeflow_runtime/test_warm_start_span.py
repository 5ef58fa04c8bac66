"""The warm start's span, by hand: the live warm start and the backtest's approximation both take
it from `warm_start_span`, so its edges are checked once here."""

from __future__ import annotations

from tapeflow_runtime.warm_start_span import WarmStartSpan, warm_start_span

NOW = 1_700_049_630_250  # 2023-11-15 12:00:30.250 UTC
MIN = 60_000


def test_bars_from_the_minute_the_window_starts_in_to_the_minute_detail_minutes_before_now():
    span = warm_start_span(NOW, 25, 62)
    since = NOW - 25 * 3_600_000  # 2023-11-14 11:00:30.250
    assert span == WarmStartSpan(since, NOW, since - 30_250, NOW - 30_250 - 62 * MIN)
    assert len(span.bar_minutes()) == 25 * 60 - 62 and span.bar_minutes()[0] == since - 30_250


def test_no_bars_without_detail_minutes_or_when_they_cover_the_window():
    for detail in (0, 60, 90):
        span = warm_start_span(NOW, 1, detail)
        assert span.detail_from_ms is None and len(span.bar_minutes()) == 0, detail
    assert (
        warm_start_span(NOW, 1, 59.5).detail_from_ms == NOW - 30_250 - 59 * MIN
    )  # 12:00:30.25 - 59.5 min: 11:01:00.25
