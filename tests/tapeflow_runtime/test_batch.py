"""``batch_gc``: thresholds raised for the block only, restored after it (also on an error); ``streaming_gc``."""

from __future__ import annotations

import gc
import subprocess
import sys

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


def test_streaming_gc_freezes_what_exists_and_collects_the_young_less_often():
    # in a process of its own: a frozen heap is for a service's whole life, not for a test worker's
    code = (
        "import gc\n"
        "from tapeflow_runtime.batch import streaming_gc, STREAMING_GEN0_THRESHOLD\n"
        "alive = [[i] for i in range(1000)]\n"
        "before = gc.get_threshold()\n"
        "assert gc.get_freeze_count() == 0\n"
        "streaming_gc()\n"
        "assert gc.get_freeze_count() >= 1000, gc.get_freeze_count()\n"
        "assert gc.get_threshold() == (STREAMING_GEN0_THRESHOLD, *before[1:]), gc.get_threshold()\n"
        "garbage = []\n"
        "garbage.append(garbage)\n"  # a cycle made after the freeze is still collected
        "del garbage\n"
        "assert gc.collect() >= 1\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
