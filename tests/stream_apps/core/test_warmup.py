"""``warm_up`` compiles (or loads from numba's cache) the kernels the engine calls, the detectors'
included, before a worker consumes: checked in a fresh interpreter (this process's other tests
compile them anyway), where none of the detectors' kernels is compiled before it and all are after."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.support.paths import REPO

KERNELS = {
    "stream_apps.core.detectors.kernels": ("apply_trades", "advance_to"),
    "stream_apps.core.detectors.flow_kernels": ("divergence_trades", "divergence_advance", "flow_values"),
    "stream_apps.core.detectors.book_kernels": ("book_update", "add_trades", "book_values"),
    "stream_apps.core.kernels": ("thresholds_at", "ring_window_sums"),
}
SCRIPT = """
import importlib, json, sys
kernels = json.loads(sys.argv[1])
def compiled():
    return {f"{m}.{k}": bool(getattr(importlib.import_module(m), k).signatures) for m, ks in kernels.items() for k in ks}
before = compiled()
from stream_apps.core.warmup import warm_up
warm_up()
print(json.dumps([before, compiled()]))
"""


def test_warm_up_compiles_every_kernel_the_engine_and_its_detectors_call():
    out = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(KERNELS)], cwd=REPO, capture_output=True,
                         text=True, timeout=600, check=True)
    before, after = json.loads(out.stdout.strip().splitlines()[-1])
    assert not any(before.values()), before  # nothing compiled by importing alone
    assert all(after.values()), [name for name, done in after.items() if not done]
