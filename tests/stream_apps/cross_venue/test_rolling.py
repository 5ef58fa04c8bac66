"""Rolling window statistics against straightforward numpy recomputations over generated series."""

from __future__ import annotations

import numpy as np
import pytest

from stream_apps.cross_venue.rolling import RollingWindow


def series(seed: int, n: int, sample_ms: int, gap_p: float) -> tuple[np.ndarray, np.ndarray]:
    """A random walk sampled on a grid of `sample_ms`, with some grid points missing."""
    rng = np.random.default_rng(seed)
    grid = np.arange(n, dtype=np.int64) * sample_ms + 1_700_000_000_000 // sample_ms * sample_ms
    keep = rng.random(n) >= gap_p
    values = 2e-3 + np.cumsum(rng.normal(0, 1e-4, n)) + 0.5 * 1e-4 * np.sin(np.arange(n) / 7)
    return grid[keep], values[keep]


def reference(times: np.ndarray, values: np.ndarray, i: int, window_ms: int) -> dict:
    """The statistics of the window ending at sample i, recomputed from scratch."""
    in_window = (times > times[i] - window_ms) & (times <= times[i])
    t, v = times[in_window], values[in_window]
    out = {"n": len(v), "mean": v.mean(), "min": v.min(), "max": v.max()}
    if len(v) < 2:
        return out
    out["std"] = v.std(ddof=1)
    out["slope_per_min"] = np.polyfit((t - t[0]) / 60_000.0, v, 1)[0]
    # side of each sample against the mean of the window ending at that sample, that sample included
    sides = []
    for j in np.flatnonzero(in_window):
        own = (times > times[j] - window_ms) & (times <= times[j])
        sides.append(1 if values[j] >= values[own].mean() else -1)
    crossings = sum(1 for a, b in zip(sides, sides[1:]) if a != b)
    out["crossings_per_hour"] = crossings / ((t[-1] - t[0]) / 3_600_000)
    out["drift_ratio"] = abs(v[-1] - v[0]) / np.abs(np.diff(v)).sum()
    return out


@pytest.mark.parametrize(
    "seed, window_ms, sample_ms, gap_p",
    [
        (1, 60_000, 1_000, 0.0),
        (2, 300_000, 5_000, 0.3),
        (3, 3_600_000, 60_000, 0.1),
        (4, 10_000, 1_000, 0.6),  # many gaps: windows often hold 0-2 samples
    ],
)
def test_every_statistic_matches_a_recomputation(seed, window_ms, sample_ms, gap_p):
    times, values = series(seed, 400, sample_ms, gap_p)
    window = RollingWindow(window_ms, sample_ms)
    for i, (t, v) in enumerate(zip(times.tolist(), values.tolist())):
        window.add(t, v)
        got, want = window.stats(t), reference(times, values, i, window_ms)
        assert got.n == want["n"]
        for name in ("mean", "min", "max", "std", "slope_per_min", "crossings_per_hour", "drift_ratio"):
            if name in want:
                assert getattr(got, name) == pytest.approx(want[name], rel=1e-7, abs=1e-13), (i, name)
            else:
                assert getattr(got, name) is None and dict(got.reasons)[name] == "window has 1 sample"


def test_the_window_forgets_by_time_even_without_new_samples():
    window = RollingWindow(10_000, 1_000)
    for t, v in ((0, 1.0), (1_000, 3.0), (2_000, 2.0)):
        window.add(t, v)
    assert window.stats(10_999).n == 2  # the sample at 0 left at 10,000; (1,000, 2,000] are in
    s = window.stats(11_500)
    assert (s.n, s.mean, s.min, s.max) == (1, 2.0, 2.0, 2.0)
    empty = window.stats(12_000)
    assert empty.n == 0 and empty.mean is None and dict(empty.reasons)["mean"] == "window has no sample"


def test_hand_computed_small_window():
    # values 1, 3, 2, 4 at seconds 0..3: mean 2.5, sample variance ((1.5²+.5²)*2)/3 = 5/3,
    # slope (least squares on t = 0,1,2,3 s): sum((t-1.5)(v-2.5)) / sum((t-1.5)²)
    # = (2.25 - 0.25 - 0.25 + 2.25) / (2.25 + 0.25 + 0.25 + 2.25) = 4/5 = 0.8 per s = 48 per minute,
    # sides against the running mean (1 / 2 / 2 / 2.5): +, +, +(2 >= 2), + → no crossing;
    # drift |4 - 1| / (2 + 1 + 2) = 0.6
    window = RollingWindow(60_000, 1_000)
    for t, v in ((0, 1.0), (1_000, 3.0), (2_000, 2.0), (3_000, 4.0)):
        window.add(t, v)
    s = window.stats(3_000)
    assert s.mean == pytest.approx(2.5) and s.std == pytest.approx((5 / 3) ** 0.5)
    assert s.slope_per_min == pytest.approx(48.0) and s.drift_ratio == pytest.approx(0.6)
    assert s.crossings_per_hour == 0.0 and (s.min, s.max, s.span_ms) == (1.0, 4.0, 3_000)
    window.add(4_000, 0.0)  # mean 2: 0 is below, one crossing over 4 s = 900 per hour
    assert window.stats(4_000).crossings_per_hour == pytest.approx(900.0)


def test_a_flat_series_has_no_drift_ratio_and_samples_too_close_are_refused():
    window = RollingWindow(60_000, 1_000)
    window.add(0, 5.0)
    window.add(1_000, 5.0)
    s = window.stats(1_000)
    assert s.std == 0.0 and s.drift_ratio is None and dict(s.reasons)["drift_ratio"] == "window did not move"
    with pytest.raises(ValueError):
        window.add(1_500, 5.0)
    with pytest.raises(ValueError):
        window.add(3_000, float("nan"))


def test_memory_is_fixed_and_long_runs_stay_exact():
    # 20 windows' worth of samples: the ring never grows and the running sums do not drift
    window = RollingWindow(3_600_000, 5_000)
    times, values = series(7, 20 * 721, 5_000, 0.05)
    for t, v in zip(times.tolist(), values.tolist()):
        window.add(t, v)
    assert window._v.shape == (721,) and len(window._min) <= 721 and len(window._max) <= 721
    t_in, v_in = window.values()
    got = window.stats(int(times[-1]))
    assert got.mean == pytest.approx(v_in.mean(), rel=1e-12) and got.std == pytest.approx(v_in.std(ddof=1), rel=1e-9)
