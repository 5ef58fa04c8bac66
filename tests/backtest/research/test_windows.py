"""Walk-forward windows: parsing, rolling boundaries, embargo, hold-out, purge."""

from __future__ import annotations

import pytest

from backtest.research.windows import WalkForwardSpec, Window, parse_walk_forward, rolling_windows

DAY = 86_400_000
T0 = 1_704_067_200_000


def test_parse_the_issue_example_and_defaults():
    spec = parse_walk_forward("train=30d,test=7d,step=7d")
    assert spec == WalkForwardSpec(30 * DAY, 7 * DAY, 7 * DAY, 0, 0)
    assert str(spec) == "train=30d,test=7d,step=7d"
    spec = parse_walk_forward("train=2d, test=12h, embargo=4h, holdout=1d", default_embargo_ms=0)
    assert spec == WalkForwardSpec(2 * DAY, DAY // 2, DAY // 2, 4 * 3_600_000, DAY)  # step defaults to test
    assert parse_walk_forward("train=1d,test=1d", default_embargo_ms=3_600_000).embargo_ms == 3_600_000


@pytest.mark.parametrize(
    "text",
    [
        "train=30d",
        "test=7d",
        "train=30d,test=7x",
        "train=30d,test=7d,foo=1d",
        "train=30d,train=20d,test=7d",
        "train=-1d,test=7d",
    ],
)
def test_parse_errors_name_the_problem(text):
    with pytest.raises(ValueError, match="walk-forward"):
        parse_walk_forward(text)


def test_rolling_windows_boundaries():
    spec = WalkForwardSpec(30 * DAY, 7 * DAY, 7 * DAY)
    windows, holdout = rolling_windows(spec, T0, T0 + 51 * DAY)
    assert holdout is None
    assert [(w.train_start - T0) // DAY for w in windows] == [0, 7, 14]  # the 4th would test days 51..58
    for w in windows:
        assert w.train_end - w.train_start == 30 * DAY
        assert w.test_start == w.train_end and w.test_end - w.test_start == 7 * DAY
    assert windows[-1].test_end == T0 + 51 * DAY


def test_embargo_and_holdout_keep_tests_and_the_end_apart():
    spec = WalkForwardSpec(10 * DAY, 2 * DAY, 2 * DAY, embargo_ms=DAY // 6, holdout_ms=3 * DAY)
    windows, holdout = rolling_windows(spec, T0, T0 + 30 * DAY)
    assert holdout == (T0 + 27 * DAY, T0 + 30 * DAY)
    assert all(w.test_start == w.train_end + DAY // 6 for w in windows)
    assert all(w.test_end <= holdout[0] for w in windows)  # no window touches the hold-out
    with pytest.raises(ValueError, match="shorter than one window"):
        rolling_windows(spec, T0, T0 + 14 * DAY)


def test_purge_a_trade_counts_only_where_it_was_decided_and_closed():
    w = Window(0, T0, T0 + DAY, T0 + DAY, T0 + 2 * DAY)
    assert w.contains_train(T0 + 10, T0 + 20)
    assert not w.contains_train(T0 + DAY - 60_000, T0 + DAY + 60_000)  # closed after training ended
    assert not w.contains_test(T0 + DAY - 60_000, T0 + DAY + 60_000)  # decided before the test began
    assert w.contains_test(T0 + DAY, T0 + DAY + 1)
    assert not w.contains_train(T0 - 1, T0 + 5)
