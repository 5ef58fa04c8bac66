"""Purged K-fold with embargo and walk-forward splits (``backtest.research.purged_cv``)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score

from backtest.research.purged_cv import NaiveKFold, PurgedKFold, walk_forward_splits
from backtest.research.windows import WalkForwardSpec


def test_purge_and_embargo_by_hand():
    # ten rows a minute apart, each label two minutes long; five folds of two rows; embargo one minute
    t0 = np.arange(10)
    cv = PurgedKFold(5, t0, t0 + 2, embargo_ms=1)
    splits = list(cv.split(np.zeros((10, 1))))
    assert [test.tolist() for _train, test in splits] == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    # test rows 4, 5 span [4, 7]: rows 2..7 have labels [t0, t0 + 2] touching it (purged), row 8 starts
    # within the minute after 7 (embargoed); rows 0, 1 and 9 remain
    assert splits[2][0].tolist() == [0, 1, 9]
    # the first fold spans [0, 3]: rows 0..3 overlap, row 4 is embargoed
    assert splits[0][0].tolist() == [5, 6, 7, 8, 9]
    # the last fold spans [8, 11]: rows 6..9 overlap; nothing after it to embargo
    assert splits[4][0].tolist() == [0, 1, 2, 3, 4, 5]
    # without an embargo only the overlap goes
    assert list(PurgedKFold(5, t0, t0 + 2).split())[2][0].tolist() == [0, 1, 8, 9]


def test_rows_in_any_order_and_no_training_label_touches_a_test_span():
    rng = np.random.default_rng(2)
    t0 = rng.integers(0, 100_000, size=3000)
    t1 = t0 + rng.integers(0, 5000, size=3000)
    cv = PurgedKFold(4, t0, t1, embargo_ms=700)
    seen = []
    for train, test in cv.split():
        seen += test.tolist()
        lo, hi = t0[test].min(), t1[test].max()
        assert not np.any((t0[train] <= hi) & (t1[train] >= lo))
        assert not np.any((t0[train] > hi) & (t0[train] <= hi + 700))
        assert not set(train) & set(test)
    assert sorted(seen) == list(range(3000))
    # the folds are consecutive blocks of time
    tests = [test for _train, test in cv.split()]
    assert all(t0[a].max() <= t0[b].min() for a, b in zip(tests, tests[1:]))


def test_scikit_learn_takes_it_as_a_cv_splitter():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 2))
    y = (x[:, 0] + rng.normal(size=600) > 0).astype(int)
    t0 = np.arange(600)
    scores = cross_val_score(LogisticRegression(), x, y, cv=PurgedKFold(3, t0, t0 + 10), scoring="roc_auc")
    assert len(scores) == 3 and all(s > 0.7 for s in scores)
    naive = list(NaiveKFold(3, 600, seed=1).split())
    assert sorted(np.concatenate([t for _tr, t in naive]).tolist()) == list(range(600))


def test_bad_arguments():
    with pytest.raises(ValueError):
        PurgedKFold(1, [0, 1], [1, 2])
    with pytest.raises(ValueError):
        PurgedKFold(2, [0, 1], [1, 0])
    with pytest.raises(ValueError):
        PurgedKFold(3, [0, 1], [1, 2])
    with pytest.raises(ValueError):
        list(PurgedKFold(2, [0, 1], [1, 2]).split(np.zeros((3, 1))))


def test_walk_forward_splits_train_only_on_labels_known_before_the_training_end():
    hour = 3_600_000
    t0 = np.arange(0, 48 * hour, 60_000)  # a row a minute for two days, labels one hour long
    t1 = t0 + hour
    spec = WalkForwardSpec(train_ms=12 * hour, test_ms=6 * hour, step_ms=6 * hour, embargo_ms=hour)
    splits = walk_forward_splits(spec, t0, t1, 0, 48 * hour)
    assert len(splits) == 5  # windows laid while train + embargo + test fits: starts 0, 6, 12, 18, 24 h
    for window, train, test in splits:
        assert t0[train].min() == window.train_start and t1[train].max() < window.train_end
        assert t1[train].max() == window.train_end - 60_000  # the last hour of training rows is purged
        assert t0[test].min() == window.test_start and t0[test].max() < window.test_end
        assert window.test_start == window.train_end + hour
