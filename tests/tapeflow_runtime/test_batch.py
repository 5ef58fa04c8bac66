"""``batch_gc``: thresholds raised for the block only, restored after it (also on an error)."""

from __future__ import annotations

import gc

import pytest

from tapeflow_runtime.batch import batch_gc


def test_batch_gc_raises_the_first_threshold_for_the_block_and_restores_it():
    before = gc.get_threshold()
    with batch_gc(50_000):
        assert gc.get_threshold() == (max(50_000, before[0]), *before[1:])
    assert gc.get_threshold() == before
    with pytest.raises(RuntimeError), batch_gc(50_000):
        raise RuntimeError("a failed run")
    assert gc.get_threshold() == before


def test_batch_gc_never_lowers_a_threshold_set_higher():
    before = gc.get_threshold()
    try:
        gc.set_threshold(200_000, *before[1:])
        with batch_gc(50_000):
            assert gc.get_threshold()[0] == 200_000
    finally:
        gc.set_threshold(*before)
