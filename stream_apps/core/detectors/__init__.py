"""Microstructure detectors of the engine core: VPIN, Kyle's lambda, Amihud illiquidity,
the flow detectors: CVD–price divergence, open-interest spikes, liquidation clusters and cascades,
and the book detectors: order-book walls (pulled or filled) and iceberg refills.

Incremental (trade by trade, compiled where hot), deterministic whatever the batching, bounded
memory per symbol, plain-data state: the same rules as the rest of ``stream_apps.core`` so the live
worker and the backtest compute them alike. See ``microstructure``, ``flow`` and ``book`` for the
definitions.
"""

from importlib import import_module

from .params import BOOK_FIELDS, FLOW_FIELDS, BookParams, DetectorParams, FlowParams
from .params import DETECTOR_FIELDS as MICROSTRUCTURE_FIELDS

DETECTOR_FIELDS = MICROSTRUCTURE_FIELDS + FLOW_FIELDS + BOOK_FIELDS  # every feature a ``detectors`` section may add

__all__ = [
    "BOOK_FIELDS",
    "DETECTOR_FIELDS",
    "FLOW_FIELDS",
    "MICROSTRUCTURE_FIELDS",
    "BookDetectors",
    "BookParams",
    "DetectorLog",
    "DetectorParams",
    "FlowDetectors",
    "FlowParams",
    "MicrostructureDetectors",
]

#: the detectors themselves, imported on first use (PEP 562): they import numba and the compiled
#: kernels, which a process that only reads strategy files (the executor, the web UI) never runs
_LAZY = {
    "BookDetectors": ".book",
    "FlowDetectors": ".flow",
    "DetectorLog": ".microstructure",
    "MicrostructureDetectors": ".microstructure",
}


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
