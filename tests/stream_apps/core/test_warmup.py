"""``warm_up`` compiles (or loads from numba's cache) the kernels the engine calls, the detectors'
when the worker's strategies turn them on, before a worker consumes: checked in a fresh interpreter
(this process's other tests compile them anyway), where no kernel is compiled before it, the core's
are after it for strategies without detectors (and the detectors' are not), all are for strategies
with them."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.support.paths import REPO

KERNELS = {
    "stream_apps.core.detectors.kernels": ("apply_trades", "advance_to"),
    "stream_apps.core.detectors.flow_kernels": ("divergence_trades", "divergence_advance", "flow_values"),
    "stream_apps.core.detectors.book_kernels": ("book_update", "add_trades", "book_values"),
    "stream_apps.core.kernels": ("thresholds_at", "ring_window_sums", "cooldown_rows"),
}
SCRIPT = """
import importlib, json, sys
kernels = json.loads(sys.argv[1])
def compiled():
    return {f"{m}.{k}": bool(getattr(importlib.import_module(m), k).signatures) for m, ks in kernels.items() for k in ks}
before = compiled()
from stream_apps.core.strategy import default_strategy_dir, load_strategies
from stream_apps.core.warmup import EVERY_DETECTOR, warm_up
shipped = load_strategies(default_strategy_dir())
warm_up(shipped)  # no detectors among them: the core only
core = compiled()
warm_up([shipped[0].model_copy(update={"detectors": EVERY_DETECTOR})])
after = compiled()
# then what a worker runs: three hours with signals (warm-up 0, entry threshold 1), every detector on
import numba
def signatures():
    return {f"{m}.{name}": len(k.signatures) for m in kernels for name, k in vars(importlib.import_module(m)).items()
            if isinstance(k, numba.core.registry.CPUDispatcher)}
from stream_apps.core.engine import Engine
from stream_apps.core.synthetic import synthetic_trades
warmed = signatures()
cfg = shipped[0].model_copy(update={"warmup": 0, "detectors": EVERY_DETECTOR,
                                    "thresholds": shipped[0].thresholds.model_copy(update={"entry": 1})})
T0 = 1_700_000_000_000
out = Engine([cfg]).process([synthetic_trades("BTCUSDT", start_ms=T0, duration_ms=3 * 3_600_000, rate_per_s=2.0)],
                            now_ms=T0 + 3 * 3_600_000 + 60_000)
print(json.dumps([before, core, after, warmed, signatures(), len(out.signals)]))
"""


def test_warm_up_compiles_every_kernel_the_engine_and_its_detectors_call():
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(KERNELS)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    before, core, after, warmed, session, signals = json.loads(out.stdout.strip().splitlines()[-1])
    assert not any(before.values()), before  # nothing compiled by importing alone
    assert all(after.values()), [name for name, done in after.items() if not done]
    # strategies without detectors do not wait for the detectors' kernels (seconds in a fresh checkout)
    detectors = {name for name in after if ".detectors." in name}
    assert not any(core[name] for name in detectors) and all(core[name] for name in set(core) - detectors)
    # a session with signals compiles nothing more: every kernel it calls had its types warmed
    assert signals > 0 and session == warmed, {k: (warmed.get(k), n) for k, n in session.items() if warmed.get(k) != n}
